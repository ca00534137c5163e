// replication-floor: the least software a 3-replica 4 KiB write at QD1 can cross on one machine, in C, as the
// reference that bench/replication-compare sets beside Hci's figures.
//
// A client hands each write to an owner through shared memory and an eventfd (as a vhost-user front-end is kicked),
// the owner sends it to two replicas over loopback TCP (TCP_NODELAY, one send of header and data per replica) and
// writes it to its own file, each replica writes it to its file and answers with 8 bytes, and the owner answers the
// client through a second eventfd. Files are opened O_DIRECT; every call blocks (a synchronous pwrite waits in the
// kernel), so each hop costs exactly one wake and the chain makes the fewest system calls it can: no polling (four
// processes share the cores here), no checksums, no metadata, no protocol checks. Whatever a real implementation
// adds to this is its overhead; what this costs is the machine's.
//
// usage: replication-floor chain SECONDS FILE1 FILE2 FILE3   the replicated write (owner FILE1, replicas FILE2, 3)
//        replication-floor local SECONDS FILE                 a 4 KiB O_DIRECT pwrite at QD1 by the client itself
//        replication-floor rtt SECONDS                        a 64-byte loopback TCP round trip between two processes
// Offsets are random 4 KiB blocks within the smallest file (lay the files out first: a hole is not a write).
// Prints one JSON line: {"mode", "ios", "mean_us", "p50_us", "p99_us"}. Exit status 1 on any failure, 2 on bad use.
#define _GNU_SOURCE
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BS 4096
#define MAX_SAMPLES (1 << 22)

struct frame { char data[BS]; uint64_t off; uint64_t id; }; // the data first: aligned for O_DIRECT
struct shared { volatile uint64_t off; volatile int stop; };

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static int open_file(const char *path, uint64_t *blocks)
{
    int fd = open(path, O_RDWR | O_DIRECT);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0)
        die(path);
    if (st.st_size < BS) {
        fprintf(stderr, "replication-floor: %s holds less than one 4 KiB block: lay it out first\n", path);
        exit(2);
    }
    if (*blocks == 0 || (uint64_t)st.st_size / BS < *blocks)
        *blocks = (uint64_t)st.st_size / BS;
    return fd;
}

// receive: 0 send, 1 receive (the peer closing is a failure), 2 receive in a child's loop (the peer closing between
// frames is the end of the run).
static void all(int fd, void *buf, size_t n, int receive)
{
    for (size_t done = 0; done < n;) {
        ssize_t r = receive ? recv(fd, (char *)buf + done, n - done, MSG_WAITALL) : send(fd, (char *)buf + done, n - done, 0);
        if (r <= 0) {
            if (receive == 2 && r == 0 && done == 0)
                _exit(0);
            if (r == 0) {
                fprintf(stderr, "replication-floor: the peer closed its connection (did it fail?)\n");
                exit(1);
            }
            die(receive ? "recv" : "send");
        }
        done += (size_t)r;
    }
}

// A child dies with its parent (a killed run leaves nothing behind holding the files).
static pid_t child(void)
{
    pid_t parent = getpid(), pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0 && (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent))
        _exit(1);
    return pid;
}

// Waits for fd to be readable or a child to be gone: a child that failed must not leave its parent waiting.
static void wait_readable(int fd, const char *what)
{
    for (;;) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int r = poll(&p, 1, 1000);
        if (r > 0)
            return;
        if (r < 0)
            die("poll");
        int status;
        if (waitpid(-1, &status, WNOHANG) > 0) {
            fprintf(stderr, "replication-floor: a process of the run ended while waiting for %s\n", what);
            exit(1);
        }
    }
}

static int listen_loopback(int *port)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (l < 0 || bind(l, (void *)&a, sizeof a) != 0 || listen(l, 4) != 0 || getsockname(l, (void *)&a, &len) != 0)
        die("listen");
    *port = ntohs(a.sin_port);
    return l;
}

static int no_delay(int fd)
{
    int one = 1;
    if (fd < 0 || setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
        die("socket");
    return fd;
}

static int dial_loopback(int port)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = htons(port) };
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (c < 0 || connect(c, (void *)&a, sizeof a) != 0)
        die("connect");
    return no_delay(c);
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static uint64_t random_block(uint64_t blocks)
{
    return ((uint64_t)lrand48() << 31 ^ (uint64_t)lrand48()) % blocks;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    int need = !strcmp(mode, "chain") ? 6 : !strcmp(mode, "local") ? 4 : !strcmp(mode, "rtt") ? 3 : 0;
    double seconds = argc > 2 ? atof(argv[2]) : 0;
    if (need == 0 || argc != need || !(seconds > 0)) {
        fprintf(stderr, "usage: replication-floor chain SECONDS FILE1 FILE2 FILE3 | local SECONDS FILE | rtt SECONDS\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    double *lat = malloc(sizeof(double) * MAX_SAMPLES);
    struct frame *f;
    if (lat == NULL || posix_memalign((void **)&f, BS, sizeof *f) != 0)
        die("memory");
    memset(f, 0x5a, sizeof *f);
    srand48(getpid());
    int n = 0;
    uint64_t blocks = 0;
    double end, t;

    if (!strcmp(mode, "local")) {
        int fd = open_file(argv[3], &blocks);
        for (end = now_ns() + seconds * 1e9; (t = now_ns()) < end && n < MAX_SAMPLES;) {
            if (pwrite(fd, f->data, BS, (off_t)(random_block(blocks) * BS)) != BS)
                die("pwrite");
            lat[n++] = now_ns() - t;
        }
    } else if (!strcmp(mode, "rtt")) {
        int port, l = listen_loopback(&port);
        char b[64] = { 0 };
        if (child() == 0) {
            int c = dial_loopback(port);
            for (;;) {
                all(c, b, sizeof b, 2);
                all(c, b, sizeof b, 0);
            }
        }
        wait_readable(l, "the echo process to connect");
        int s = no_delay(accept(l, NULL, NULL));
        for (end = now_ns() + seconds * 1e9; (t = now_ns()) < end && n < MAX_SAMPLES;) {
            all(s, b, sizeof b, 0);
            all(s, b, sizeof b, 1);
            lat[n++] = now_ns() - t;
        }
        close(s);
        wait(NULL);
    } else {
        for (int i = 3; i < 6; i++) // every file opens, before any process starts; the offsets must fit every file
            close(open_file(argv[i], &blocks));
        int port, l = listen_loopback(&port), rep[2];
        for (int r = 0; r < 2; r++) {
            if (child() == 0) { // a replica: receive, write, answer
                int fd = open_file(argv[4 + r], &blocks), c = dial_loopback(port);
                for (;;) {
                    all(c, f, sizeof *f, 2);
                    if (pwrite(fd, f->data, BS, (off_t)f->off) != BS)
                        die("replica pwrite");
                    all(c, &f->id, sizeof f->id, 0);
                }
            }
            wait_readable(l, "a replica to connect");
            rep[r] = no_delay(accept(l, NULL, NULL));
        }
        struct shared *sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        int kick = eventfd(0, 0), call = eventfd(0, 0);
        if (sh == MAP_FAILED || kick < 0 || call < 0)
            die("shared memory");
        pid_t owner = child();
        if (owner == 0) { // the owner: send to both replicas, write locally, collect both answers, answer the client
            int fd = open_file(argv[3], &blocks);
            uint64_t v, ack;
            for (;;) {
                if (read(kick, &v, 8) != 8)
                    die("kick");
                if (sh->stop)
                    _exit(0);
                f->off = sh->off;
                f->id++;
                for (int r = 0; r < 2; r++)
                    all(rep[r], f, sizeof *f, 0);
                if (pwrite(fd, f->data, BS, (off_t)f->off) != BS)
                    die("owner pwrite");
                for (int r = 0; r < 2; r++)
                    all(rep[r], &ack, sizeof ack, 1);
                v = 1;
                if (write(call, &v, 8) != 8)
                    die("call");
            }
        }
        uint64_t v = 1;
        for (end = now_ns() + seconds * 1e9; (t = now_ns()) < end && n < MAX_SAMPLES;) {
            sh->off = random_block(blocks) * BS;
            v = 1;
            if (write(kick, &v, 8) != 8)
                die("client");
            wait_readable(call, "the owner's answer");
            if (read(call, &v, 8) != 8)
                die("client");
            lat[n++] = now_ns() - t;
        }
        sh->stop = 1;
        v = 1;
        if (write(kick, &v, 8) != 8)
            die("stop");
        waitpid(owner, NULL, 0);
        close(rep[0]);
        close(rep[1]);
        while (wait(NULL) > 0) {
        }
    }
    if (n == 0) {
        fprintf(stderr, "replication-floor: no I/O completed\n");
        return 1;
    }
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += lat[i];
    qsort(lat, (size_t)n, sizeof *lat, by_value);
    printf("{\"mode\": \"%s\", \"ios\": %d, \"mean_us\": %.1f, \"p50_us\": %.1f, \"p99_us\": %.1f}\n", mode, n, sum / n / 1000,
           lat[n / 2] / 1000, lat[(int)(n * 0.99)] / 1000);
    return 0;
}
