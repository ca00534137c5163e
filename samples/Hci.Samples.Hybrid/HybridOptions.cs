using Hci.Core.Devices;
using Hci.Samples.Shared;
using Hci.Scheduling;

namespace Hci.Samples.Hybrid;

/// <summary>hci-hybrid's command line.</summary>
internal sealed class HybridOptions
{
    public static readonly string Usage = $$"""
        usage: hci-hybrid --backing FILE [--size SIZE] [--ioengine io_uring|file|memory|null]
                          (--vm-socket PATH)... (--container-socket PATH)...
                          [--scheduler fifo|limits|mclock|hybrid] [--container-allow uid:N|gid:N]...
                          [--vm-allow uid:N|gid:N]... [--reactors N] [--poll-us N] [--buffered] [-v]
           or: hci-hybrid (--etcd URL | --data-dir DIR) --node ID --device FILE[:SIZE] --socket-dir DIR [options]

        One host serving VMs and containers from the same volume under one scheduler (the paper's hybrid):
          --vm-socket PATH          a vhost-user-blk socket for a VM (QEMU); its requests are class Vm (repeatable)
          --container-socket PATH   a vhost-user-blk socket for a container or process (the Hci client, no I/O
                                    virtualization); its requests are class Container (repeatable)
          --backing FILE            the file or block device that holds the volume
          --size SIZE               its size (k, m, g, t); needed for a new file and for memory/null
          --ioengine ENGINE         io_uring (default), file, memory or null
          --scheduler KIND          hybrid (default): containers first, VMs throttled and batched while they press;
                                    fifo, limits or mclock for comparison
          --container-allow WHO     uid:N or gid:N admitted on the container sockets, checked with SO_PEERCRED at
                                    connect (repeatable); default: only this process's own uid
          --vm-allow WHO            the same for the VM sockets; default: anyone who can open them (mode 0600)
          --reactors N              data-plane threads shared by every socket (default 1)
          --poll-us N               how long a reactor polls before it sleeps, in microseconds (default 32)
          --buffered                use the page cache (no O_DIRECT)
        Cluster node (instead of --backing): every volume attached to this node is served as two sockets in
        --socket-dir, NAME.vm.sock (class Vm) and NAME.ct.sock (class Container), under one scheduler.
          --socket-dir DIR          where those sockets go
        {{ClusterNodeOptions.Usage}}
        Each connection is a tenant of the scheduler. On SIGINT or SIGTERM the host prints, per class, the requests
        served, the time they waited in the scheduler and the time they were throttled.
        """;

    public List<string> VmSockets { get; } = [];

    public List<string> ContainerSockets { get; } = [];

    public string? Backing { get; set; }

    public long Size { get; set; }

    public string IoEngine { get; set; } = "io_uring";

    public string Scheduler { get; set; } = "hybrid";

    public List<uint> ContainerUsers { get; } = [];

    public List<uint> ContainerGroups { get; } = [];

    public List<uint> VmUsers { get; } = [];

    public List<uint> VmGroups { get; } = [];

    public int Reactors { get; set; } = 1;

    public int PollMicroseconds { get; set; } = 32;

    public bool Buffered { get; set; }

    public bool Verbose { get; set; }

    public bool Help { get; set; }

    public ClusterNodeOptions Cluster { get; } = new();

    public string? SocketDir { get; set; }

    public BlockEngine Engine => IoEngine switch
    {
        "io_uring" or "iouring" => BlockEngine.IoUring,
        "file" => BlockEngine.File,
        "memory" => BlockEngine.Memory,
        "null" => BlockEngine.Null,
        _ => throw new UsageException($"--ioengine {IoEngine} is not known: use io_uring, file, memory or null."),
    };

    public SchedulerKind SchedulerKind => Scheduler switch
    {
        "fifo" => SchedulerKind.Fifo,
        "limits" => SchedulerKind.Limits,
        "mclock" => SchedulerKind.MClock,
        "hybrid" => SchedulerKind.Hybrid,
        _ => throw new UsageException($"--scheduler {Scheduler} is not known: use fifo, limits, mclock or hybrid."),
    };

    public static HybridOptions Parse(string[] args)
    {
        var o = new HybridOptions();
        for (int i = 0; i < args.Length; i++)
        {
            string arg = args[i];
            string Value()
            {
                if (i + 1 >= args.Length)
                {
                    throw new UsageException($"{arg} needs a value (see --help)");
                }

                return args[++i];
            }

            switch (arg)
            {
                case "--vm-socket":
                    o.VmSockets.Add(Value());
                    break;
                case "--container-socket":
                    o.ContainerSockets.Add(Value());
                    break;
                case "--backing":
                    o.Backing = Value();
                    break;
                case "--size":
                {
                    string text = Value();
                    o.Size = Hci.Samples.Shared.SizeText.TryParse(text, out long bytes) && bytes > 0
                        ? bytes
                        : throw new UsageException($"--size {text}: expected a positive size in bytes, optionally with k, m, g or t");
                    break;
                }

                case "--ioengine":
                    o.IoEngine = Value();
                    break;
                case "--scheduler":
                    o.Scheduler = Value();
                    break;
                case "--container-allow":
                    AddPeer(arg, Value(), o.ContainerUsers, o.ContainerGroups);
                    break;
                case "--vm-allow":
                    AddPeer(arg, Value(), o.VmUsers, o.VmGroups);
                    break;
                case "--reactors":
                    o.Reactors = Int(arg, Value(), 1, 64);
                    break;
                case "--poll-us":
                    o.PollMicroseconds = Int(arg, Value(), 0, 1_000_000);
                    break;
                case "--buffered":
                    o.Buffered = true;
                    break;
                case "-v" or "--verbose":
                    o.Verbose = true;
                    break;
                case "-h" or "--help":
                    o.Help = true;
                    return o;
                case "--socket-dir":
                    o.SocketDir = Value();
                    break;
                default:
                    if (!o.Cluster.TryParse(arg, Value, m => new UsageException(m)))
                    {
                        throw new UsageException($"unknown argument '{arg}' (see --help)");
                    }

                    break;
            }
        }

        o.Cluster.Check(m => new UsageException(m));
        if (o.Cluster.Enabled)
        {
            if (o.SocketDir == null)
            {
                throw new UsageException("a cluster node needs --socket-dir DIR for the sockets of the volumes attached to it");
            }

            if (o.VmSockets.Count + o.ContainerSockets.Count > 0 || o.Backing != null)
            {
                throw new UsageException("a cluster node serves the volumes attached to it: give --socket-dir, not --vm-socket, --container-socket or --backing");
            }

            _ = o.SchedulerKind;
            return o;
        }

        if (o.VmSockets.Count + o.ContainerSockets.Count == 0)
        {
            throw new UsageException("give at least one --vm-socket or --container-socket (or join a cluster with --etcd or --data-dir)");
        }

        var all = o.VmSockets.Concat(o.ContainerSockets).Select(Path.GetFullPath).ToList();
        if (all.Distinct().Count() != all.Count)
        {
            throw new UsageException("each socket path may be given once (a socket has one class)");
        }

        if (o.Engine is not (BlockEngine.Memory or BlockEngine.Null) && string.IsNullOrEmpty(o.Backing))
        {
            throw new UsageException($"--ioengine {o.IoEngine} needs --backing FILE_OR_DEVICE");
        }

        if (o.Engine is BlockEngine.Memory or BlockEngine.Null && o.Size <= 0)
        {
            throw new UsageException($"--ioengine {o.IoEngine} needs --size SIZE");
        }

        _ = o.SchedulerKind;
        return o;
    }

    private static void AddPeer(string name, string text, List<uint> users, List<uint> groups)
    {
        int colon = text.IndexOf(':');
        string kind = colon < 0 ? "" : text[..colon];
        if (colon < 0 || kind is not ("uid" or "gid") || !uint.TryParse(text.AsSpan(colon + 1), out uint id))
        {
            throw new UsageException($"{name} {text}: expected uid:N or gid:N (a number, e.g. uid:1000)");
        }

        (kind == "uid" ? users : groups).Add(id);
    }

    private static int Int(string name, string text, int min, int max) =>
        int.TryParse(text, out int v) && v >= min && v <= max ? v : throw new UsageException($"{name} {text}: expected a whole number from {min} to {max}");
}

internal sealed class UsageException(string message) : Exception(message);
