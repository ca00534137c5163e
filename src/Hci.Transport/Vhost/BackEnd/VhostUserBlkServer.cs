using System.Diagnostics.Metrics;
using System.Text;
using Hci.Core.Blocks;
using Hci.Core.Native;
using Hci.Core.Reactors;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Tmds.Linux;

namespace Hci.Transport.Vhost;

/// <summary>
/// A vhost-user-blk back-end: exports one <see cref="BlockDevice"/> on a Unix socket to vhost-user front-ends
/// (QEMU, or the vhost-user-blk client for processes and containers). Guest I/O enters the device as class VM under
/// <see cref="VhostUserBlkServerOptions.Tenant"/>, so a scheduler below sees it, and a throttled tenant's requests
/// are left in the guest's ring with kicks suppressed.
/// </summary>
/// <remarks>
/// <para><b>Theory of operation.</b> Three kinds of thread, as QEMU's vhost-user-server: one accepts connections;
/// each connection gets a control thread running a <c>VhostUserSession</c> (the generic protocol, one method per
/// message, blocking on its socket), whose device hooks (<c>VhostUserBlkDevice</c>) make virtio-blk of it; and a
/// fixed set of data-plane reactors (<see cref="Hci.Core.Reactors.Reactor"/>, <see cref="VhostUserBlkServerOptions.ReactorThreads"/>
/// of them) serve the rings. Each reactor owns one queue on the device and runs one poller over the rings placed on
/// it (the least loaded takes each new ring): it takes chains straight out of guest memory with no copy, submits
/// them in batches and answers on the used ring. It polls for a while after the last work, then asks for kicks and
/// sleeps in one wait on the device and on every kick eventfd. A control thread changes a running ring only by a
/// message to its reactor, and stopping a ring waits for the requests it started.</para>
/// <para>Meter <c>Hci.Transport.VhostUser</c>: <c>hci.vhost.requests</c>, <c>hci.vhost.kicks</c> and
/// <c>hci.vhost.interrupts</c> (their ratios are the notifications per I/O), tagged with the socket path. What the
/// reactors allocate is the <c>hci.reactor.allocated_bytes</c> counter of <see cref="Hci.Core.Reactors.ReactorMetrics"/>
/// (reactors named <c>hci-vhost-S-N</c>: server S, reactor N).</para>
/// </remarks>
public sealed unsafe class VhostUserBlkServer : IDisposable
{
    /// <summary>Name of the meter.</summary>
    public const string MeterName = "Hci.Transport.VhostUser";

    private readonly ILogger _logger;
    private readonly Lock _lock = new();
    private readonly List<VhostUserSession> _sessions = [];
    private readonly Meter _meter;
    private ReactorGroup? _group;
    private RingPoller[] _pollers = [];
    private Thread? _acceptThread;
    private FileDescriptorHandle? _listen;
    private int _nextSession;
    private long _retiredRequests;
    private long _retiredInterrupts;
    private readonly List<ReactorRing> _live = [];
    private volatile bool _stopping;
    private static int s_instances;
    private static int s_connectionTenants = 1 << 20; // per-connection tenants: clear of the small numbers configured by hand
    private readonly int _instance = Interlocked.Increment(ref s_instances);

    /// <summary>Creates the server; <see cref="Start"/> opens the socket.</summary>
    /// <param name="device">The device to export; it must outlive the server.</param>
    /// <param name="options">Settings, checked here.</param>
    /// <param name="logger">Where to log; none by default.</param>
    /// <exception cref="ArgumentException">The options are invalid; the message says what to fix.</exception>
    public VhostUserBlkServer(BlockDevice device, VhostUserBlkServerOptions options, ILogger? logger = null)
    {
        Device = device ?? throw new ArgumentNullException(nameof(device));
        ArgumentNullException.ThrowIfNull(options);
        Options = options.Resolve();
        _logger = logger ?? NullLogger.Instance;
        var tags = new KeyValuePair<string, object?>("hci.socket", Options.SocketPath);
        _meter = new Meter(MeterName);
        _meter.CreateObservableCounter("hci.vhost.requests", () => new Measurement<long>(Requests, tags), "{request}", "Requests answered to front-ends.");
        _meter.CreateObservableCounter("hci.vhost.kicks", () => new Measurement<long>(Kicks, tags), "{kick}", "Kicks (guest-to-host notifications) read.");
        _meter.CreateObservableCounter("hci.vhost.interrupts", () => new Measurement<long>(Interrupts, tags), "{interrupt}", "Interrupts (host-to-guest notifications) raised.");
    }

    /// <summary>The exported device.</summary>
    public BlockDevice Device { get; }

    /// <summary>The settings, defaults resolved.</summary>
    public VhostUserBlkServerOptions Options { get; }

    /// <summary>The socket path.</summary>
    public string SocketPath => Options.SocketPath;

    /// <summary>Front-ends connected now.</summary>
    public int Connections
    {
        get
        {
            lock (_lock)
            {
                return _sessions.Count;
            }
        }
    }

    /// <summary>Requests answered so far (approximate while rings run).</summary>
    public long Requests
    {
        get
        {
            lock (_lock)
            {
                long n = _retiredRequests;
                foreach (var r in _live)
                {
                    n += r.Processor?.Completed ?? 0;
                }

                return n;
            }
        }
    }

    /// <summary>Interrupts raised so far (approximate while rings run).</summary>
    public long Interrupts
    {
        get
        {
            lock (_lock)
            {
                long n = _retiredInterrupts;
                foreach (var r in _live)
                {
                    n += r.Processor?.Interrupts ?? 0;
                }

                return n;
            }
        }
    }

    /// <summary>Kicks read so far.</summary>
    public long Kicks => _pollers.Sum(r => r.Kicks);

    /// <summary>Starts the reactors, creates the socket (replacing a stale one) and accepts front-ends.</summary>
    /// <exception cref="IOException">The socket could not be created; the message says why.</exception>
    public void Start()
    {
        if (_acceptThread != null)
        {
            throw new InvalidOperationException("The server is already started.");
        }

        var group = Options.Reactors ?? new ReactorGroup(new ReactorGroupOptions { Count = Options.ReactorThreads, Name = $"hci-vhost-{_instance}", PollWindow = Options.PollWindow });
        var pollers = new List<RingPoller>();
        try
        {
            foreach (var reactor in group.Reactors)
            {
                var poller = new RingPoller(reactor, Device, Options.QueueDepth, _logger);
                poller.Start();
                pollers.Add(poller);
            }

            _listen = Listen(Options.SocketPath, Options.SocketMode);
        }
        catch
        {
            foreach (var p in pollers)
            {
                p.Stop();
            }

            if (Options.Reactors == null)
            {
                group.Dispose();
            }

            throw;
        }

        _group = group;
        _pollers = [.. pollers];

        _acceptThread = new Thread(AcceptLoop) { IsBackground = true, Name = "hci-vhost-accept" };
        _acceptThread.Start();
        VhostLog.Listening(_logger, Options.SocketPath, Device.Name, Device.Geometry.Capacity, Options.MaxQueues, _pollers.Length);
    }

    /// <summary>Closes the socket, disconnects every front-end (after their requests complete) and stops the reactors.</summary>
    public void Dispose()
    {
        if (_stopping)
        {
            return;
        }

        _stopping = true;
        if (_listen != null)
        {
            LibC.shutdown(_listen.Fd, LibC.SHUT_RDWR);
        }

        _acceptThread?.Join();
        if (_listen != null)
        {
            _listen.Dispose();
            _listen = null;
            Unlink(Options.SocketPath);
        }

        VhostUserSession[] sessions;
        lock (_lock)
        {
            sessions = [.. _sessions];
        }

        foreach (var s in sessions)
        {
            s.Shutdown();
        }

        foreach (var s in sessions)
        {
            s.Dispose();
        }

        foreach (var p in _pollers)
        {
            p.Stop();
        }

        if (Options.Reactors == null)
        {
            _group?.Dispose();
        }

        _meter.Dispose();
    }

    /// <summary>Places a new ring on the least loaded reactor; dispose the assignment when the ring stops.</summary>
    internal (RingPoller Poller, ReactorAssignment Assignment) PickReactor()
    {
        var group = _group ?? throw new InvalidOperationException("The server is not started.");
        var assignment = group.Assign();
        foreach (var p in _pollers)
        {
            if (p.Reactor == assignment.Reactor)
            {
                return (p, assignment);
            }
        }

        assignment.Dispose();
        throw new InvalidOperationException("The reactor has no ring poller.");
    }

    /// <summary>The data-plane reactors' names (the <c>reactor</c> tag of their meters).</summary>
    internal IEnumerable<string> ReactorNames => _pollers.Select(p => p.Reactor.Name);

    internal void Track(ReactorRing ring)
    {
        lock (_lock)
        {
            _live.Add(ring);
        }
    }

    internal void Retire(ReactorRing ring)
    {
        lock (_lock)
        {
            if (_live.Remove(ring) && ring.Processor != null)
            {
                _retiredRequests += ring.Processor.Completed;
                _retiredInterrupts += ring.Processor.Interrupts;
            }
        }
    }

    internal void OnSessionClosed(VhostUserSession session)
    {
        lock (_lock)
        {
            _sessions.Remove(session);
        }
    }

    private static FileDescriptorHandle Listen(string path, UnixFileMode mode)
    {
        var socket = new FileDescriptorHandle(LibC.socket(LibC.AF_UNIX, LibC.SOCK_STREAM | LibC.SOCK_CLOEXEC, 0));
        int fd = socket.Fd;
        if (socket.IsInvalid)
        {
            throw new IOException($"Creating a Unix socket failed: {Errno.Describe(LibC.errno)}.");
        }

        try
        {
            // A socket left by a previous run is replaced; anything else at that path is not touched.
            switch (FileType(path))
            {
                case 0:
                    break;
                case 0xC000: // S_IFSOCK
                    Unlink(path);
                    break;
                default:
                    throw new IOException($"'{path}' exists and is not a socket; choose another socket path or remove it.");
            }

            var address = UnixSocketAddress.Create(path);

            LibC.fchmod(fd, (mode_t)(uint)mode);
            if (LibC.bind(fd, (sockaddr*)&address, sizeof(sockaddr_un)) != 0)
            {
                throw new IOException($"Binding '{path}' failed: {Errno.Describe(LibC.errno)}. Check the directory exists and is writable.");
            }

            File.SetUnixFileMode(path, mode);
            if (LibC.listen(fd, 16) != 0)
            {
                throw new IOException($"Listening on '{path}' failed: {Errno.Describe(LibC.errno)}.");
            }

            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    // The S_IFMT bits of the file at path (not following a link), or 0 when nothing is there. statx has one
    // layout on every architecture, so no per-architecture offsets of struct stat are needed.
    private static uint FileType(string path)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(path + "\0");
        statx buffer;
        fixed (byte* p = bytes)
        {
            if (LibC.statx(LibC.AT_FDCWD, p, LibC.AT_SYMLINK_NOFOLLOW, LibC.STATX_TYPE, &buffer) != 0)
            {
                return 0;
            }
        }

        return buffer.stx_mode & 0xF000u;
    }

    private static void Unlink(string path)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(path + "\0");
        fixed (byte* p = bytes)
        {
            LibC.unlink(p);
        }
    }

    // The connecting process's credentials (SO_PEERCRED: as of its connect); admitted when no list is set or it is in one.
    private bool Admit(int fd, out ucred peer)
    {
        peer = default;
        socklen_t size = (uint)sizeof(ucred);
        fixed (ucred* p = &peer)
        {
            if (LibC.getsockopt(fd, LibC.SOL_SOCKET, LibC.SO_PEERCRED, p, &size) != 0)
            {
                peer.pid = -1;
                return Options.AllowedUsers.Count == 0 && Options.AllowedGroups.Count == 0;
            }
        }

        if (Options.AllowedUsers.Count == 0 && Options.AllowedGroups.Count == 0)
        {
            return true;
        }

        return Options.AllowedUsers.Contains((uint)peer.uid) || Options.AllowedGroups.Contains((uint)peer.gid);
    }

    private void AcceptLoop()
    {
        while (!_stopping)
        {
            int fd = LibC.accept4(_listen!.Fd, null, null, LibC.SOCK_CLOEXEC);
            if (fd < 0)
            {
                int errno = LibC.errno;
                if (_stopping)
                {
                    return;
                }

                if (errno is Errno.EINTR or 103 /* ECONNABORTED */)
                {
                    continue;
                }

                VhostLog.AcceptFailed(_logger, Options.SocketPath, Errno.Describe(errno));
                Thread.Sleep(100);
                continue;
            }

            if (!Admit(fd, out var peer))
            {
                VhostLog.PeerRefused(
                    _logger,
                    Options.SocketPath,
                    (int)peer.pid,
                    (uint)peer.uid,
                    (uint)peer.gid);
                new FileDescriptorHandle(fd).Dispose();
                continue;
            }

            VhostUserSession session;
            int tenant = Options.TenantPerConnection ? Interlocked.Increment(ref s_connectionTenants) : Options.Tenant;
            lock (_lock)
            {
                if (_sessions.Count >= Options.MaxConnections)
                {
                    VhostLog.TooManyConnections(_logger, Options.SocketPath, _sessions.Count);
                    new FileDescriptorHandle(fd).Dispose();
                    continue;
                }

                int id = ++_nextSession;
                session = new VhostUserSession(fd, id, new VhostUserBlkDevice(this, id, tenant, _logger), Options.SocketPath, Options.AllowUnsealedMemory, _logger, OnSessionClosed);
                _sessions.Add(session);
            }

            VhostLog.Connected(
                _logger,
                Options.SocketPath,
                session.Id,
                (int)peer.pid,
                (uint)peer.uid,
                Options.Class,
                tenant);
            new Thread(session.Run) { IsBackground = true, Name = $"hci-vhost-session-{session.Id}" }.Start();
        }
    }
}
