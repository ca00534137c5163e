using System.Globalization;
using System.Text.Json;
using Hci.Core.Devices;
using Hci.Samples.Shared;
using Hci.Scheduling;

namespace Hci.Samples.HostType;

/// <summary>One exported volume: a socket and the device behind it.</summary>
internal sealed class VolumeSpec
{
    public string Socket { get; set; } = "";

    public string? Backing { get; set; }

    public long? Size { get; set; }

    public string IoEngine { get; set; } = "io_uring";

    public bool Buffered { get; set; }

    public bool ReadOnly { get; set; }

    public bool AllowUnsealedMemory { get; set; }

    public int Queues { get; set; }

    public string Serial { get; set; } = "";

    public int Tenant { get; set; }

    public string Scheduler { get; set; } = "none";

    public BlockEngine Engine => IoEngine switch
    {
        "io_uring" or "iouring" => BlockEngine.IoUring,
        "file" => BlockEngine.File,
        "memory" => BlockEngine.Memory,
        "null" => BlockEngine.Null,
        "auto" => BlockEngine.Auto,
        _ => throw new UsageException($"--ioengine {IoEngine} is not known: use io_uring, file, memory or null."),
    };

    public SchedulerKind? SchedulerKind => Scheduler switch
    {
        "none" => null,
        "fifo" => Hci.Scheduling.SchedulerKind.Fifo,
        "limits" => Hci.Scheduling.SchedulerKind.Limits,
        "mclock" => Hci.Scheduling.SchedulerKind.MClock,
        "hybrid" => Hci.Scheduling.SchedulerKind.Hybrid,
        _ => throw new UsageException($"--scheduler {Scheduler} is not known: use none, fifo, limits, mclock or hybrid."),
    };

    public void Check()
    {
        if (string.IsNullOrEmpty(Socket))
        {
            throw new UsageException("every volume needs --socket PATH");
        }

        var engine = Engine;
        _ = SchedulerKind;
        if (engine is BlockEngine.Memory or BlockEngine.Null)
        {
            if (Size == null)
            {
                throw new UsageException($"--ioengine {IoEngine} needs --size BYTES (volume on {Socket})");
            }
        }
        else if (string.IsNullOrEmpty(Backing))
        {
            throw new UsageException($"--ioengine {IoEngine} needs --backing FILE_OR_DEVICE (volume on {Socket})");
        }
    }
}

/// <summary>The host's command line and configuration file.</summary>
internal sealed class HostOptions
{
    public static readonly string Usage = $$"""
        hci-hosttype: export Hci volumes to VMs and processes as vhost-user-blk.

        usage: hci-hosttype --socket PATH (--backing FILE_OR_DEVICE [--size BYTES] | --size BYTES) [options]
                            [--socket PATH ... for more volumes] [--config FILE.json]
           or: hci-hosttype (--etcd URL | --data-dir DIR) --node ID --device FILE[:SIZE] --socket-dir DIR [options]
                            (a cluster node: every volume attached to it is served as DIR/NAME.sock)

        Per volume (each --socket starts a new volume; the options after it apply to it):
          --socket PATH        Unix socket the front-end (QEMU, hci-bench) connects to (created mode 0600)
          --backing PATH       file or block device behind the volume (a file is created if missing)
          --size BYTES         volume size; suffixes k, m, g, t (powers of 1024). Needed to create a file
                               and for the memory and null engines
          --ioengine ENGINE    io_uring (default) | file | memory | null
          --buffered           use the page cache instead of O_DIRECT
          --readonly           export read-only
          --allow-unsealed-memory
                               accept guest memory in files that cannot be sealed against shrinking (hugetlbfs,
                               /dev/shm files); only for trusted front-ends: one that truncates such a file kills
                               this process. QEMU's memory-backend-memfd (the default) needs no such trust
          --queues N           virtqueues offered (default: processors, at most 8)
          --serial TEXT        the id the guest reads (default: the socket's file name)
          --tenant N           scheduler tenant of this volume's I/O (default 0)
          --scheduler KIND     none (default) | fifo | limits | mclock | hybrid
        Cluster node:
          --socket-dir DIR     where the sockets of the volumes attached to this node go (NAME.sock)
        {{ClusterNodeOptions.Usage}}
        Host:
          --reactors N         data-plane threads per volume (default: half the processors, at least 1)
          --poll-us N          reactors poll their rings this long after work before sleeping (default 32; 0: never)
          --config FILE        JSON: {"reactors": 2, "volumes": [{"socket": "...", "backing": "...", "size": 1073741824,
                               "ioEngine": "io_uring", "queues": 2, "scheduler": "hybrid"}]}; command-line volumes are added
          --verbose            log protocol details
          -h, --help           this text

        It logs one line per volume when its socket is ready and exits cleanly on SIGINT or SIGTERM.
        """;

    public List<VolumeSpec> Volumes { get; } = [];

    public ClusterNodeOptions Cluster { get; } = new();

    public string? SocketDir { get; set; }

    public int Reactors { get; set; }

    public double PollMicroseconds { get; set; } = 32;

    public bool Verbose { get; set; }

    public bool Help { get; set; }

    public static HostOptions Parse(string[] args)
    {
        var o = new HostOptions();
        VolumeSpec? current = null;
        for (int i = 0; i < args.Length; i++)
        {
            string arg = args[i];
            string? inline = null;
            int eq = arg.IndexOf('=');
            if (arg.StartsWith("--", StringComparison.Ordinal) && eq > 0)
            {
                inline = arg[(eq + 1)..];
                arg = arg[..eq];
            }

            string Value()
            {
                if (inline != null)
                {
                    return inline;
                }

                if (i + 1 >= args.Length || args[i + 1].StartsWith("--", StringComparison.Ordinal))
                {
                    throw new UsageException($"{arg} needs a value");
                }

                return args[++i];
            }

            VolumeSpec Volume() => current ?? throw new UsageException($"{arg} belongs to a volume: give --socket PATH first");

            switch (arg)
            {
                case "-h" or "--help":
                    o.Help = true;
                    break;
                case "--socket":
                    current = new VolumeSpec { Socket = Value() };
                    o.Volumes.Add(current);
                    break;
                case "--backing":
                    Volume().Backing = Value();
                    break;
                case "--size":
                    Volume().Size = ParseSize(arg, Value());
                    break;
                case "--ioengine":
                    Volume().IoEngine = Value();
                    break;
                case "--buffered":
                    Volume().Buffered = true;
                    break;
                case "--readonly":
                    Volume().ReadOnly = true;
                    break;
                case "--allow-unsealed-memory":
                    Volume().AllowUnsealedMemory = true;
                    break;
                case "--queues":
                    Volume().Queues = ParseInt(arg, Value(), 1, 256);
                    break;
                case "--serial":
                    Volume().Serial = Value();
                    break;
                case "--tenant":
                    Volume().Tenant = ParseInt(arg, Value(), 0, int.MaxValue);
                    break;
                case "--scheduler":
                    Volume().Scheduler = Value();
                    break;
                case "--reactors":
                    o.Reactors = ParseInt(arg, Value(), 1, 256);
                    break;
                case "--poll-us":
                    o.PollMicroseconds = ParseInt(arg, Value(), 0, 1_000_000);
                    break;
                case "--config":
                    o.Load(Value());
                    break;
                case "--verbose":
                    o.Verbose = true;
                    break;
                case "--socket-dir":
                    o.SocketDir = Value();
                    break;
                default:
                    if (!o.Cluster.TryParse(arg, Value, m => new UsageException(m)))
                    {
                        throw new UsageException($"unknown option '{args[i]}' (see --help)");
                    }

                    break;
            }
        }

        if (!o.Help)
        {
            o.Cluster.Check(m => new UsageException(m));
            if (o.Cluster.Enabled && o.SocketDir == null)
            {
                throw new UsageException("a cluster node needs --socket-dir DIR for the sockets of the volumes attached to it");
            }

            if (o.Volumes.Count == 0 && !o.Cluster.Enabled)
            {
                throw new UsageException("no volume: give --socket PATH with --backing FILE or --size BYTES (see --help)");
            }

            foreach (var v in o.Volumes)
            {
                v.Check();
            }

            var duplicate = o.Volumes.GroupBy(v => Path.GetFullPath(v.Socket)).FirstOrDefault(g => g.Count() > 1);
            if (duplicate != null)
            {
                throw new UsageException($"socket {duplicate.Key} is given for more than one volume");
            }
        }

        return o;
    }

    public static long ParseSize(string name, string text) =>
        Hci.Samples.Shared.SizeText.TryParse(text, out long bytes) ? bytes : throw new UsageException($"{name} {text}: expected a positive size in bytes, optionally with k, m, g or t");

    private static int ParseInt(string name, string text, int min, int max)
    {
        if (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int value) || value < min || value > max)
        {
            throw new UsageException($"{name} {text}: expected a whole number from {min} to {max}");
        }

        return value;
    }

    private void Load(string path)
    {
        ConfigFile? file;
        try
        {
            file = JsonSerializer.Deserialize<ConfigFile>(File.ReadAllText(path), new JsonSerializerOptions { PropertyNameCaseInsensitive = true, ReadCommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true });
        }
        catch (Exception e) when (e is IOException or JsonException or UnauthorizedAccessException)
        {
            throw new UsageException($"--config {path}: {e.Message}");
        }

        if (file == null)
        {
            throw new UsageException($"--config {path}: empty");
        }

        if (file.Reactors is { } r)
        {
            Reactors = r is >= 1 and <= 256 ? r : throw new UsageException($"--config {path}: reactors must be from 1 to 256");
        }

        Volumes.AddRange(file.Volumes ?? []);
    }

    private sealed class ConfigFile
    {
        public int? Reactors { get; set; }

        public List<VolumeSpec>? Volumes { get; set; }
    }
}

/// <summary>A command-line or configuration mistake; the message says what to fix.</summary>
internal sealed class UsageException(string message) : Exception(message);
