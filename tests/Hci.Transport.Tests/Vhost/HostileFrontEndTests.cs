using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using Hci.Core.Blocks;
using Hci.Core.Devices;
using Hci.Transport.Vhost;
using Tmds.Linux;

namespace Hci.Transport.Tests;

/// <summary>
/// A hostile front-end against the real back-end over its socket: randomized, mostly malformed vhost-user messages
/// (wrong sizes, flags, indices, descriptor counts, memory tables that lie about their files, rings pointing
/// anywhere, garbage descriptor chains kicked into the rings). The back-end must neither crash nor hang, must keep
/// accepting connections, and must then serve a well-behaved client correctly.
/// </summary>
public sealed class HostileFrontEndTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private const int Messages = 100_000;

    [Fact]
    public async Task HundredThousandHostileMessagesNeitherCrashNorHangAndTheDeviceStillServes()
    {
        string dir = Directory.CreateTempSubdirectory("hci-hostile-").FullName;
        string socket = Path.Combine(dir, "s.sock");
        using var backing = new MemoryBlockDevice(8 << 20);
        using var server = new VhostUserBlkServer(backing, new VhostUserBlkServerOptions { SocketPath = socket, MaxQueues = 2, ReactorThreads = 1, MaxConnections = 64 });
        server.Start();
        int connections = Flood(socket);
        Assert.True(connections > 10, $"only {connections} connections were made");
        output.WriteLine($"{Messages} messages over {connections} connections; the back-end read {server.Kicks} kicks and answered {server.Requests} requests");
        Assert.True(server.Kicks > 100, $"only {server.Kicks} kicks reached running rings");

        // Every hostile session ends; then a well-behaved client is served correctly.
        await Hci.Testing.Deadline.WaitUntilAsync(() => server.Connections == 0, "every hostile session to end", detail: () => $"{server.Connections} still open");
        using var client = VhostUserBlkClient.Connect(new VhostUserBlkClientOptions { SocketPath = socket, QueueCount = 1 });
        var data = new byte[8192];
        new Random(5).NextBytes(data);
        await client.WriteAsync(4096, data);
        var back = new byte[8192];
        await client.ReadAsync(4096, back);
        Assert.Equal(data, back);
        Directory.Delete(dir, recursive: true);
    }

    private static unsafe int Flood(string socket)
    {
        var rng = new Random(1234);
        var payload = new byte[600];
        int sent = 0;
        int connections = 0;
        var watch = Stopwatch.StartNew();
        int fd = -1;
        int memFd = -1;
        byte* memory = null;
        const int MemorySize = 1 << 20;
        try
        {
            while (sent < Messages)
            {
                if (fd < 0 || rng.Next(2000) == 0)
                {
                    if (fd >= 0)
                    {
                        LibC.close(fd);
                    }

                    fd = Connect(socket);
                    connections++;
                    if (memFd < 0)
                    {
                        memFd = MemFd(MemorySize);
                        memory = (byte*)LibC.mmap(null, MemorySize, LibC.PROT_READ | LibC.PROT_WRITE, LibC.MAP_SHARED, memFd, 0);
                    }

                    // Half the connections first set up a plausible device, so later garbage reaches running rings.
                    if (rng.Next(2) == 0)
                    {
                        Plausible(fd, rng, memFd, (ulong)memory, MemorySize);
                    }
                }

                // Garbage in the shared memory (rings, descriptors, headers), then a kick on both queues' eventfds.
                if (rng.Next(8) == 0)
                {
                    rng.NextBytes(new Span<byte>(memory + rng.Next(MemorySize - 4096), rng.Next(4096)));
                }

                var request = (VhostUserRequest)(rng.Next(10) == 0 ? rng.Next(64) : Requests[rng.Next(Requests.Length)]);
                uint flags = rng.Next(8) == 0 ? (uint)rng.Next() : (rng.Next(2) == 0 ? 0x1u : 0x9u);
                int size = rng.Next(6) switch
                {
                    0 => 0,
                    1 => 8,
                    2 => 40,
                    3 => 8 + (32 * rng.Next(0, 10)),
                    4 => 12 + rng.Next(0, 300),
                    _ => rng.Next(payload.Length),
                };
                rng.NextBytes(payload.AsSpan(0, size));
                if (size >= 8 && rng.Next(2) == 0)
                {
                    // A small index or count up front, so more messages pass the first checks.
                    BinaryPrimitives.WriteUInt32LittleEndian(payload, (uint)rng.Next(4));
                }

                int fdCount = rng.Next(5) == 0 ? rng.Next(1, 4) : 0;
                var fds = new int[fdCount];
                for (int i = 0; i < fdCount; i++)
                {
                    fds[i] = rng.Next(3) == 0 ? MemFd(rng.Next(1, 3) * 4096) : LibC.eventfd(0, LibC.EFD_CLOEXEC | LibC.EFD_NONBLOCK);
                }

                bool ok = Send(fd, request, flags, payload.AsSpan(0, size), fds, claimedSize: rng.Next(50) == 0 ? (uint)rng.Next() : (uint)size);
                foreach (int f in fds)
                {
                    LibC.close(f);
                }

                sent++;
                if (!ok || !Drain(fd))
                {
                    LibC.close(fd);
                    fd = -1;
                }

                Assert.True(watch.Elapsed < TimeSpan.FromMinutes(4), $"stuck after {sent} messages");
            }
        }
        finally
        {
            if (fd >= 0)
            {
                LibC.close(fd);
            }

            if (memory != null)
            {
                LibC.munmap(memory, MemorySize);
            }

            if (memFd >= 0)
            {
                LibC.close(memFd);
            }
        }

        return connections;
    }

    private static readonly int[] Requests = [1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 24, 25, 31, 32, 36, 37, 38];

    private static unsafe void Plausible(int fd, Random rng, int memFd, ulong user, int size)
    {
        Span<byte> p = stackalloc byte[40];
        BinaryPrimitives.WriteUInt64LittleEndian(p, (1UL << 32) | (1UL << 30) | (1UL << 29) | (1UL << 28));
        Send(fd, VhostUserRequest.SetFeatures, 1, p[..8], [], 8);
        BinaryPrimitives.WriteUInt64LittleEndian(p, (ulong)VhostUserBlkDevice.OfferedProtocol);
        Send(fd, VhostUserRequest.SetProtocolFeatures, 1, p[..8], [], 8);
        Span<byte> table = stackalloc byte[40];
        BinaryPrimitives.WriteUInt32LittleEndian(table, 1);
        BinaryPrimitives.WriteUInt64LittleEndian(table[8..], 0);
        BinaryPrimitives.WriteUInt64LittleEndian(table[16..], (ulong)(rng.Next(3) == 0 ? size * 4 : size)); // sometimes longer than the file
        BinaryPrimitives.WriteUInt64LittleEndian(table[24..], user);
        BinaryPrimitives.WriteUInt64LittleEndian(table[32..], 0);
        Send(fd, VhostUserRequest.SetMemTable, 1, table, [memFd], 40);
        for (uint q = 0; q < 2; q++)
        {
            int qsize = 1 << rng.Next(1, 9);
            BinaryPrimitives.WriteUInt32LittleEndian(p, q);
            BinaryPrimitives.WriteUInt32LittleEndian(p[4..], (uint)qsize);
            Send(fd, VhostUserRequest.SetVringNum, 1, p[..8], [], 8);
            p.Clear();
            BinaryPrimitives.WriteUInt32LittleEndian(p, q);
            BinaryPrimitives.WriteUInt64LittleEndian(p[8..], user + (ulong)(rng.Next(size / 16) * 16));
            BinaryPrimitives.WriteUInt64LittleEndian(p[16..], user + (ulong)(rng.Next(size / 4) * 4));
            BinaryPrimitives.WriteUInt64LittleEndian(p[24..], user + (ulong)(rng.Next(size / 2) * 2));
            Send(fd, VhostUserRequest.SetVringAddr, 1, p, [], 40);
            int kick = LibC.eventfd(1, LibC.EFD_CLOEXEC | LibC.EFD_NONBLOCK);
            int call = LibC.eventfd(0, LibC.EFD_CLOEXEC | LibC.EFD_NONBLOCK);
            BinaryPrimitives.WriteUInt64LittleEndian(p, q);
            Send(fd, VhostUserRequest.SetVringKick, 1, p[..8], [kick], 8);
            Send(fd, VhostUserRequest.SetVringCall, 1, p[..8], [call], 8);
            LibC.close(kick);
            LibC.close(call);
            BinaryPrimitives.WriteUInt32LittleEndian(p, q);
            BinaryPrimitives.WriteUInt32LittleEndian(p[4..], 1);
            Send(fd, VhostUserRequest.SetVringEnable, 1, p[..8], [], 8);
        }

        Drain(fd);
    }

    private static unsafe int Connect(string path)
    {
        int fd = LibC.socket(LibC.AF_UNIX, LibC.SOCK_STREAM | LibC.SOCK_CLOEXEC, 0);
        var address = UnixSocketAddress.Create(path);

        Assert.Equal(0, LibC.connect(fd, (sockaddr*)&address, sizeof(sockaddr_un)));
        long* timeout = stackalloc long[2] { 5, 0 }; // struct timeval: 5 s, so a full socket fails the send instead of hanging the test
        LibC.setsockopt(fd, LibC.SOL_SOCKET, LibC.SO_SNDTIMEO, timeout, 16);
        return fd;
    }

    private static unsafe int MemFd(int size)
    {
        int fd;
        fixed (byte* name = "hostile\0"u8)
        {
            // Sealable, as QEMU's memfd backend makes guest memory: the back-end refuses memory it cannot seal.
            fd = LibC.memfd_create(name, LibC.MFD_CLOEXEC | 0x2u /* MFD_ALLOW_SEALING */);
        }

        LibC.ftruncate(fd, size);
        return fd;
    }

    private static unsafe bool Send(int fd, VhostUserRequest request, uint flags, ReadOnlySpan<byte> payload, ReadOnlySpan<int> fds, uint claimedSize)
    {
        var message = new byte[12 + payload.Length];
        BinaryPrimitives.WriteUInt32LittleEndian(message, (uint)request);
        BinaryPrimitives.WriteUInt32LittleEndian(message.AsSpan(4), flags);
        BinaryPrimitives.WriteUInt32LittleEndian(message.AsSpan(8), claimedSize);
        payload.CopyTo(message.AsSpan(12));
        var channel = new VhostUserChannel(LibC.dup(fd));
        try
        {
            // The channel sends the header it builds; a lying size needs the raw bytes.
            if (claimedSize != payload.Length)
            {
                fixed (byte* p = message)
                {
                    return LibC.send(fd, p, message.Length, LibC.MSG_NOSIGNAL) == message.Length;
                }
            }

            return channel.Send(request, flags, payload, fds);
        }
        finally
        {
            channel.Dispose();
        }
    }

    // Reads (and drops) whatever the back-end answered, so its replies never fill the socket.
    private static unsafe bool Drain(int fd)
    {
        byte* buffer = stackalloc byte[4096];
        int controlLength = LibC.CMSG_SPACE(8 * sizeof(int));
        byte* control = stackalloc byte[controlLength];
        while (true)
        {
            iovec iov = default;
            iov.iov_base = buffer;
            iov.iov_len = 4096;
            msghdr msg = default;
            msg.msg_iov = &iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control;
            msg.msg_controllen = controlLength;
            long n = LibC.recvmsg(fd, &msg, LibC.MSG_DONTWAIT | LibC.MSG_CMSG_CLOEXEC);
            for (var c = LibC.CMSG_FIRSTHDR(&msg); n > 0 && c != null; c = LibC.CMSG_NXTHDR(&msg, c))
            {
                int count = ((int)(uint)c->cmsg_len - 16) / sizeof(int);
                for (int i = 0; i < count; i++)
                {
                    LibC.close(((int*)LibC.CMSG_DATA(c))[i]);
                }
            }

            if (n == 0)
            {
                return false; // the back-end closed this connection
            }

            if (n < 0)
            {
                return LibC.errno == Errno.EAGAIN;
            }
        }
    }
}
