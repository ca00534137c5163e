using System.CommandLine;
using System.CommandLine.Parsing;
using Hci.Core.Devices;
using Hci.Samples.Shared;
using Hci.Scheduling;
using Microsoft.Extensions.Configuration;

namespace Hci.Samples.HostType;

/// <summary>One exported volume: a socket and the device behind it.</summary>
internal sealed class VolumeSpec
{
    public static readonly string[] Keys = ["Socket", "Backing", "Size", "IoEngine", "Buffered", "ReadOnly", "AllowUnsealedMemory", "Queues", "Serial", "Tenant", "Scheduler"];

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
        _ => BlockEngine.Auto,
    };

    public SchedulerKind? SchedulerKind => Scheduler switch
    {
        "fifo" => Hci.Scheduling.SchedulerKind.Fifo,
        "limits" => Hci.Scheduling.SchedulerKind.Limits,
        "mclock" => Hci.Scheduling.SchedulerKind.MClock,
        "hybrid" => Hci.Scheduling.SchedulerKind.Hybrid,
        _ => null,
    };

    /// <summary>The volume's settings (one entry of <c>Volumes</c>), checked.</summary>
    public static VolumeSpec FromConfiguration(IConfiguration c)
    {
        var v = new VolumeSpec
        {
            Socket = c["Socket"] ?? "",
            Backing = c["Backing"],
            IoEngine = SampleCommandLine.Checked(c, "IoEngine", "--ioengine", HostOptions.Engines) ?? "io_uring",
            Buffered = SampleCommandLine.Bool(c, "Buffered", "--buffered"),
            ReadOnly = SampleCommandLine.Bool(c, "ReadOnly", "--readonly"),
            AllowUnsealedMemory = SampleCommandLine.Bool(c, "AllowUnsealedMemory", "--allow-unsealed-memory"),
            Queues = SampleCommandLine.Int(c, "Queues", "--queues", 1, 256, 0),
            Serial = c["Serial"] ?? "",
            Tenant = SampleCommandLine.Int(c, "Tenant", "--tenant", 0, int.MaxValue, 0),
            Scheduler = SampleCommandLine.Checked(c, "Scheduler", "--scheduler", HostOptions.Schedulers) ?? "none",
        };
        if (SampleCommandLine.Checked(c, "Size", "--size", SampleCommandLine.Size) is { } size)
        {
            SizeText.TryParse(size, out long bytes);
            v.Size = bytes;
        }

        if (string.IsNullOrEmpty(v.Socket))
        {
            throw new UsageException("every volume needs --socket PATH");
        }

        if (v.Engine is BlockEngine.Memory or BlockEngine.Null)
        {
            if (v.Size == null)
            {
                throw new UsageException($"--ioengine {v.IoEngine} needs --size BYTES (volume on {v.Socket})");
            }
        }
        else if (string.IsNullOrEmpty(v.Backing))
        {
            throw new UsageException($"--ioengine {v.IoEngine} needs --backing FILE_OR_DEVICE (volume on {v.Socket})");
        }

        return v;
    }
}

/// <summary>The host's settings: its command line (System.CommandLine), a JSON file, the environment.</summary>
internal sealed class HostOptions
{
    public const string Program = "hci-hosttype";

    public static readonly Func<string, string?> Engines = text => text == "iouring" ? null : SampleCommandLine.OneOf("io_uring", "file", "memory", "null")(text);

    public static readonly Func<string, string?> Schedulers = SampleCommandLine.OneOf("none", "fifo", "limits", "mclock", "hybrid");

    private const string Description = """
        hci-hosttype: export Hci volumes to VMs and processes as vhost-user-blk.

          hci-hosttype --socket PATH (--backing FILE_OR_DEVICE [--size BYTES] | --size BYTES) [options] [--socket PATH ...]
          hci-hosttype (--etcd URL | --data-dir DIR) --node ID --device FILE[:SIZE] --socket-dir DIR [options]

        Each --socket starts a volume; the volume options after it (--backing to --scheduler) apply to it. A cluster node
        serves every volume attached to it as DIR/NAME.sock. Settings also come from a JSON file (--config FILE), e.g.
        {"reactors": 2, "volumes": [{"socket": "...", "backing": "...", "size": "1g", "ioEngine": "io_uring",
        "queues": 2, "scheduler": "hybrid"}]}, and from environment variables HCI_HOSTTYPE_NAME
        (HCI_HOSTTYPE_REACTORS=2, HCI_HOSTTYPE_VOLUMES__0__SOCKET=...); the command line overrides both, and its
        volumes are added to theirs. It logs one line per volume when its socket is ready (then a systemd unit of
        Type=notify gets READY=1) and exits cleanly on SIGINT or SIGTERM.
        """;

    private static readonly string[] s_hostKeys = ["Volumes", "SocketDir", "Reactors", "PollUs", "Verbose", .. ClusterNodeOptions.Keys];

    public List<VolumeSpec> Volumes { get; } = [];

    public ClusterNodeOptions Cluster { get; private set; } = new();

    public string? SocketDir { get; set; }

    public int Reactors { get; set; }

    public double PollMicroseconds { get; set; } = 32;

    public bool Verbose { get; set; }

    /// <summary>The command line: its options, and the per-volume ones in the order they were given.</summary>
    public static SampleCommandLine CommandLine(out Option[] volumeOptions)
    {
        var cli = new SampleCommandLine(Program, Description, "HCI_HOSTTYPE_");
        volumeOptions =
        [
            cli.Repeatable("--socket", "Socket", "PATH", "Starts a volume: the Unix socket the front-end (QEMU, hci-bench) connects to (created mode 0600)", setting: false),
            cli.Repeatable("--backing", "Backing", "FILE_OR_DEVICE", "Volume: the file or block device behind it (a file is created if missing)", setting: false),
            cli.Repeatable("--size", "Size", "BYTES", "Volume: its size; suffixes k, m, g, t (powers of 1024). Needed to create a file and for the memory and null engines", SampleCommandLine.Size, setting: false),
            cli.Repeatable("--ioengine", "IoEngine", "io_uring|file|memory|null", "Volume: how the device is driven [default: io_uring]", Engines, setting: false),
            cli.Flag("--buffered", "Buffered", "Volume: use the page cache instead of O_DIRECT", setting: false),
            cli.Flag("--readonly", "ReadOnly", "Volume: export it read-only", setting: false),
            cli.Flag("--allow-unsealed-memory", "AllowUnsealedMemory", "Volume: accept guest memory in files that cannot be sealed against shrinking (hugetlbfs, /dev/shm files); only for trusted front-ends: one that truncates such a file kills this process. QEMU's memory-backend-memfd (the default) needs no such trust", setting: false),
            cli.Repeatable("--queues", "Queues", "N", "Volume: virtqueues offered, 1 to 256 [default: processors, at most 8]", SampleCommandLine.WholeNumber(1, 256), setting: false),
            cli.Repeatable("--serial", "Serial", "TEXT", "Volume: the id the guest reads [default: the socket's file name]", setting: false),
            cli.Repeatable("--tenant", "Tenant", "N", "Volume: the scheduler tenant of its I/O [default: 0]", SampleCommandLine.WholeNumber(0, int.MaxValue), setting: false),
            cli.Repeatable("--scheduler", "Scheduler", "none|fifo|limits|mclock|hybrid", "Volume: the I/O scheduler in front of its device [default: none]", Schedulers, setting: false),
        ];
        cli.Text("--socket-dir", "SocketDir", "DIR", "Cluster node: where the sockets of the volumes attached to this node go (NAME.sock)");
        ClusterNodeOptions.AddOptions(cli);
        cli.Text("--reactors", "Reactors", "N", "Data-plane threads per volume, 1 to 256 [default: half the processors, at least 1]", SampleCommandLine.WholeNumber(1, 256));
        cli.Text("--poll-us", "PollUs", "N", "How long reactors poll their rings after work before they sleep, 0 (never) to 1000000 microseconds [default: 32]", SampleCommandLine.WholeNumber(0, 1_000_000));
        cli.Flag("--verbose", "Verbose", "Log protocol details");
        return cli;
    }

    /// <summary>Parses <paramref name="args"/> and reads the settings. Null when the program should exit with
    /// <paramref name="exitCode"/> (help: 0; a mistake: 2, said on stderr).</summary>
    public static (HostOptions Options, ConfigurationManager Configuration)? Load(string[] args, out int exitCode)
    {
        var cli = CommandLine(out var volumeOptions);
        if (cli.Parse(args, out exitCode) is not { } result)
        {
            return null;
        }

        try
        {
            var configuration = cli.Configuration(result, c => CommandLineVolumes(c, result, volumeOptions));
            return (FromConfiguration(cli, configuration), configuration);
        }
        catch (UsageException e)
        {
            Console.Error.WriteLine($"{Program}: {e.Message}");
            exitCode = 2;
            return null;
        }
    }

    private static HostOptions FromConfiguration(SampleCommandLine cli, IConfiguration configuration)
    {
        cli.RejectUnknown(configuration, s_hostKeys);
        var o = new HostOptions
        {
            SocketDir = configuration["SocketDir"],
            Reactors = SampleCommandLine.Int(configuration, "Reactors", "--reactors", 1, 256, 0),
            PollMicroseconds = SampleCommandLine.Int(configuration, "PollUs", "--poll-us", 0, 1_000_000, 32),
            Verbose = SampleCommandLine.Bool(configuration, "Verbose", "--verbose"),
            Cluster = ClusterNodeOptions.FromConfiguration(configuration),
        };
        foreach (var volume in configuration.GetSection("Volumes").GetChildren().OrderBy(c => int.TryParse(c.Key, out int i) ? i : int.MaxValue))
        {
            cli.RejectUnknown(volume, VolumeSpec.Keys);
            o.Volumes.Add(VolumeSpec.FromConfiguration(volume));
        }

        o.Cluster.Check(m => new UsageException(m));
        if (o.Cluster.Enabled && o.SocketDir == null)
        {
            throw new UsageException("a cluster node needs --socket-dir DIR for the sockets of the volumes attached to it");
        }

        if (o.Volumes.Count == 0 && !o.Cluster.Enabled)
        {
            throw new UsageException("no volume: give --socket PATH with --backing FILE or --size BYTES (see --help)");
        }

        var duplicate = o.Volumes.GroupBy(v => Path.GetFullPath(v.Socket)).FirstOrDefault(g => g.Count() > 1);
        if (duplicate != null)
        {
            throw new UsageException($"socket {duplicate.Key} is given for more than one volume");
        }

        return o;
    }

    /// <summary>The command line's volumes as settings <c>Volumes:N:...</c> after the file's and the environment's:
    /// each <c>--socket</c> starts one, and the volume options that follow it are its own.</summary>
    private static IEnumerable<KeyValuePair<string, string?>> CommandLineVolumes(IConfiguration configured, ParseResult result, Option[] volumeOptions)
    {
        int next = configured.GetSection("Volumes").GetChildren().Select(c => int.TryParse(c.Key, out int i) ? i + 1 : 0).DefaultIfEmpty(0).Max();
        int volume = -1;
        Option? pending = null;
        foreach (var token in result.Tokens)
        {
            if (token.Type == TokenType.Option)
            {
                pending = volumeOptions.FirstOrDefault(o => o.Name == token.Value || o.Aliases.Contains(token.Value));
                if (pending == null)
                {
                    continue;
                }

                if (pending.Name == "--socket")
                {
                    volume = next++;
                }
                else if (volume < 0)
                {
                    throw new UsageException($"{token.Value} belongs to a volume: give --socket PATH first");
                }

                if (pending is Option<bool>)
                {
                    yield return new($"Volumes:{volume}:{Key(pending)}", "true");
                    pending = null;
                }
            }
            else if (token.Type == TokenType.Argument && pending != null)
            {
                yield return new($"Volumes:{volume}:{Key(pending)}", token.Value);
                pending = null;
            }
        }

        static string Key(Option option) => option.Name switch
        {
            "--socket" => "Socket",
            "--backing" => "Backing",
            "--size" => "Size",
            "--ioengine" => "IoEngine",
            "--buffered" => "Buffered",
            "--readonly" => "ReadOnly",
            "--allow-unsealed-memory" => "AllowUnsealedMemory",
            "--queues" => "Queues",
            "--serial" => "Serial",
            "--tenant" => "Tenant",
            _ => "Scheduler",
        };
    }
}
