using Hci.Core.Blocks;
using Hci.Core.Reactors;

namespace Hci.Transport.Vhost;

/// <summary>Settings of a <see cref="VhostUserBlkServer"/>: one socket, one exported device.</summary>
public sealed class VhostUserBlkServerOptions
{
    /// <summary>Path of the Unix socket to listen on (under 108 bytes). A stale socket there is replaced.</summary>
    public string SocketPath { get; set; } = "";

    /// <summary>Permissions of the socket file; owner read and write by default, so only the owner can connect.</summary>
    public UnixFileMode SocketMode { get; set; } = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    /// <summary>Most virtqueues a front-end may use (GET_QUEUE_NUM and num_queues); 0 picks min(processors, 8).</summary>
    public int MaxQueues { get; set; }

    /// <summary>Data-plane threads the queues are spread over; 0 picks half the processors, 1 to 8.</summary>
    public int ReactorThreads { get; set; }

    /// <summary>Depth of each reactor's block queue (requests at the device at once).</summary>
    public int QueueDepth { get; set; } = 256;

    /// <summary>
    /// How long a reactor keeps polling its rings (kicks suppressed) after its last work before it sleeps: saves
    /// the guest's kicks and the wake-ups under load, at the price of that much CPU after each burst. Zero sleeps
    /// at once. Default 32 µs, as QEMU's poll-max-ns.
    /// </summary>
    public TimeSpan PollWindow { get; set; } = TimeSpan.FromMicroseconds(32);

    /// <summary>Front-ends connected at once; further connections are closed at once.</summary>
    public int MaxConnections { get; set; } = 4;

    /// <summary>The id answered to GET_ID (at most 20 ASCII bytes are used).</summary>
    public string Serial { get; set; } = "hci";

    /// <summary>Export read-only.</summary>
    public bool ReadOnly { get; set; }

    /// <summary>The tenant the front-end's I/O counts against in the schedulers; see also
    /// <see cref="TenantPerConnection"/>.</summary>
    public int Tenant { get; set; }

    /// <summary>Give every connection a tenant of its own (a process-wide unique number, logged at connect) instead of
    /// <see cref="Tenant"/>: each VM, or each container, is then a tenant of the schedulers.</summary>
    public bool TenantPerConnection { get; set; }

    /// <summary>
    /// The class the front-ends' requests are scheduled as. <see cref="IoClass.Vm"/> (default): guests behind I/O
    /// virtualization. <see cref="IoClass.Container"/>: processes that reach the back-end with no I/O virtualization,
    /// which the hybrid scheduler serves first; limit who may connect with <see cref="AllowedUsers"/> and
    /// <see cref="AllowedGroups"/>, so a process cannot claim the fast class by connecting to the wrong socket.
    /// </summary>
    public IoClass Class { get; set; } = IoClass.Vm;

    /// <summary>User ids allowed to connect, checked with the peer's credentials (SO_PEERCRED) at accept; a peer is
    /// admitted when its uid is listed here or its gid in <see cref="AllowedGroups"/>. Both empty (the default): anyone
    /// who can open the socket (see <see cref="SocketMode"/>).</summary>
    public IList<uint> AllowedUsers { get; set; } = [];

    /// <summary>Group ids allowed to connect (the peer's primary gid, SO_PEERCRED); see <see cref="AllowedUsers"/>.</summary>
    public IList<uint> AllowedGroups { get; set; } = [];

    /// <summary>Reactors to run the rings on, shared with other servers and owned by the caller (who disposes them
    /// after every server using them). Servers of one device on one reactor share its queue, so one scheduler sees
    /// every socket's requests: how the hybrid host puts VM and container sockets under one scheduler. When null (the
    /// default) the server starts <see cref="ReactorThreads"/> reactors of its own.</summary>
    public ReactorGroup? Reactors { get; set; }

    /// <summary>
    /// Accept guest memory (and in-flight areas) in files that cannot be sealed against shrinking, such as files on
    /// hugetlbfs or /dev/shm. Off by default: the back-end maps the front-end's files, and a front-end that
    /// truncates an unsealed one under it kills the whole back-end process (SIGBUS), every volume with it. QEMU's
    /// memory-backend-memfd seals its memory by default; turn this on only for front-ends you trust.
    /// </summary>
    public bool AllowUnsealedMemory { get; set; }

    /// <summary>Checks the settings and fills in defaults.</summary>
    /// <returns>A copy with every default resolved.</returns>
    /// <exception cref="ArgumentException">A setting is invalid; the message names it and says what to fix.</exception>
    public VhostUserBlkServerOptions Resolve()
    {
        if (string.IsNullOrWhiteSpace(SocketPath))
        {
            throw new ArgumentException("VhostUserBlkServerOptions.SocketPath is required: the Unix socket path front-ends connect to.");
        }

        if (System.Text.Encoding.UTF8.GetByteCount(SocketPath) > 107)
        {
            throw new ArgumentException($"VhostUserBlkServerOptions.SocketPath '{SocketPath}' is longer than a Unix socket path may be (107 bytes); use a shorter path.");
        }

        if (MaxQueues is < 0 or > 256)
        {
            throw new ArgumentException($"VhostUserBlkServerOptions.MaxQueues must be from 1 to 256, or 0 for the default (was {MaxQueues}).");
        }

        if (ReactorThreads is < 0 or > 256)
        {
            throw new ArgumentException($"VhostUserBlkServerOptions.ReactorThreads must be from 1 to 256, or 0 for the default (was {ReactorThreads}).");
        }

        if (QueueDepth is < 1 or > 65536)
        {
            throw new ArgumentException($"VhostUserBlkServerOptions.QueueDepth must be from 1 to 65536 (was {QueueDepth}).");
        }

        if (PollWindow < TimeSpan.Zero || PollWindow > TimeSpan.FromSeconds(1))
        {
            throw new ArgumentException($"VhostUserBlkServerOptions.PollWindow must be from 0 to 1 s (was {PollWindow}).");
        }

        if (MaxConnections < 1)
        {
            throw new ArgumentException($"VhostUserBlkServerOptions.MaxConnections must be at least 1 (was {MaxConnections}).");
        }

        if (Serial == null || Serial.Any(c => c > 127))
        {
            throw new ArgumentException("VhostUserBlkServerOptions.Serial must be ASCII.");
        }

        if (Class is not (IoClass.Vm or IoClass.Container))
        {
            throw new ArgumentException($"VhostUserBlkServerOptions.Class must be Vm or Container (was {Class}); Background is the storage system's own work, not a front-end's.");
        }

        if (AllowedUsers == null || AllowedGroups == null)
        {
            throw new ArgumentException("VhostUserBlkServerOptions.AllowedUsers and AllowedGroups must not be null (leave them empty to admit anyone who can open the socket).");
        }

        return new VhostUserBlkServerOptions
        {
            SocketPath = SocketPath,
            SocketMode = SocketMode,
            MaxQueues = MaxQueues == 0 ? Math.Clamp(Environment.ProcessorCount, 1, 8) : MaxQueues,
            ReactorThreads = ReactorThreads == 0 ? Math.Clamp(Environment.ProcessorCount / 2, 1, 8) : ReactorThreads,
            QueueDepth = QueueDepth,
            PollWindow = PollWindow,
            MaxConnections = MaxConnections,
            Serial = Serial,
            ReadOnly = ReadOnly,
            Tenant = Tenant,
            TenantPerConnection = TenantPerConnection,
            Class = Class,
            AllowedUsers = [.. AllowedUsers],
            AllowedGroups = [.. AllowedGroups],
            Reactors = Reactors,
            AllowUnsealedMemory = AllowUnsealedMemory,
        };
    }
}
