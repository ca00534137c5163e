using System.Globalization;
using Hci.Core.Devices;
using Hci.Samples.Shared;
using Hci.Scheduling;
using Microsoft.Extensions.Configuration;

namespace Hci.Samples.Hybrid;

/// <summary>hci-hybrid's settings: its command line (System.CommandLine), a JSON file, the environment.</summary>
internal sealed class HybridOptions
{
    public const string Program = "hci-hybrid";

    private const string Description = """
        hci-hybrid: one host serving VMs and containers from the same volume under one scheduler (the paper's hybrid).

          hci-hybrid --backing FILE [--size SIZE] (--vm-socket PATH)... (--container-socket PATH)... [options]
          hci-hybrid (--etcd URL | --data-dir DIR) --node ID --device FILE[:SIZE] --socket-dir DIR [options]

        A cluster node (instead of --backing) serves every volume attached to it as two sockets in --socket-dir,
        NAME.vm.sock (class Vm) and NAME.ct.sock (class Container), under one scheduler. Each connection is a tenant
        of the scheduler. Settings also come from a JSON file (--config FILE), e.g. {"backing": "...",
        "vmSocket": ["..."], "containerAllow": ["uid:1000"], "reactors": 2}, and from environment variables
        HCI_HYBRID_NAME (HCI_HYBRID_SCHEDULER=fifo, HCI_HYBRID_VMSOCKET__0=...); the command line overrides both.
        It logs a ready line once it serves (then a systemd unit of Type=notify gets READY=1). On SIGINT or SIGTERM
        it prints, per class, the requests served, the time they waited in the scheduler and the time they were
        throttled.
        """;

    private static readonly Func<string, string?> s_engines = text => text == "iouring" ? null : SampleCommandLine.OneOf("io_uring", "file", "memory", "null")(text);

    private static readonly Func<string, string?> s_schedulers = SampleCommandLine.OneOf("fifo", "limits", "mclock", "hybrid");

    private static readonly Func<string, string?> s_tolerance = text =>
        double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double x) && x is >= 0 and <= 10
            ? null
            : "expected a number from 0 to 10 (0.03 lets the containers' latency rise 3%; 0 keeps VMs to their share)";

    public List<string> VmSockets { get; } = [];

    public List<string> ContainerSockets { get; } = [];

    public string? Backing { get; set; }

    public long Size { get; set; }

    public string IoEngine { get; set; } = "io_uring";

    public string Scheduler { get; set; } = "hybrid";

    /// <summary>The hybrid scheduler's <see cref="HybridSchedulerOptions.ContainerLatencyTolerance"/>.</summary>
    public double LatencyTolerance { get; set; } = new HybridSchedulerOptions().ContainerLatencyTolerance;

    public List<uint> ContainerUsers { get; } = [];

    public List<uint> ContainerGroups { get; } = [];

    public List<uint> VmUsers { get; } = [];

    public List<uint> VmGroups { get; } = [];

    public int Reactors { get; set; } = 1;

    public int PollMicroseconds { get; set; } = 32;

    public bool Buffered { get; set; }

    public bool Verbose { get; set; }

    public ClusterNodeOptions Cluster { get; private set; } = new();

    public string? SocketDir { get; set; }

    public BlockEngine Engine => IoEngine switch
    {
        "io_uring" or "iouring" => BlockEngine.IoUring,
        "file" => BlockEngine.File,
        "memory" => BlockEngine.Memory,
        "null" => BlockEngine.Null,
        _ => BlockEngine.Auto, // checked when read
    };

    public SchedulerKind SchedulerKind => Scheduler switch
    {
        "fifo" => SchedulerKind.Fifo,
        "limits" => SchedulerKind.Limits,
        "mclock" => SchedulerKind.MClock,
        "hybrid" => SchedulerKind.Hybrid,
        _ => SchedulerKind.Hybrid, // checked when read
    };

    /// <summary>The scheduler's options from these settings.</summary>
    public SchedulerOptions SchedulerOptions() => new() { Kind = SchedulerKind, Hybrid = { ContainerLatencyTolerance = LatencyTolerance } };

    /// <summary>The command line.</summary>
    public static SampleCommandLine CommandLine()
    {
        var cli = new SampleCommandLine(Program, Description, "HCI_HYBRID_");
        cli.Repeatable("--vm-socket", "VmSocket", "PATH", "A vhost-user-blk socket for a VM (QEMU); its requests are class Vm (repeatable)");
        cli.Repeatable("--container-socket", "ContainerSocket", "PATH", "A vhost-user-blk socket for a container or process (the Hci client, no I/O virtualization); its requests are class Container (repeatable)");
        cli.Text("--backing", "Backing", "FILE", "The file or block device that holds the volume");
        cli.Text("--size", "Size", "SIZE", "Its size (k, m, g, t: powers of 1024); needed for a new file and for memory and null", SampleCommandLine.Size);
        cli.Text("--ioengine", "IoEngine", "io_uring|file|memory|null", "How the device is driven [default: io_uring]", s_engines);
        cli.Text("--scheduler", "Scheduler", "hybrid|fifo|limits|mclock", "hybrid: containers first, VMs throttled and batched while they press; fifo, limits or mclock for comparison [default: hybrid]", s_schedulers);
        cli.Text("--latency-tolerance", "LatencyTolerance", "X", "hybrid: how far VM I/O on device slots the containers leave idle may raise the containers' latency, 0 to 10; 0 keeps VMs to their share while containers press [default: 0.03]", s_tolerance);
        cli.Repeatable("--container-allow", "ContainerAllow", "uid:N|gid:N", "A user or group admitted on the container sockets, checked with SO_PEERCRED at connect (repeatable) [default: only this process's own uid]", Peer);
        cli.Repeatable("--vm-allow", "VmAllow", "uid:N|gid:N", "The same for the VM sockets (repeatable) [default: anyone who can open them (mode 0600)]", Peer);
        cli.Text("--reactors", "Reactors", "N", "Data-plane threads shared by every socket, 1 to 64 [default: 1]", SampleCommandLine.WholeNumber(1, 64));
        cli.Text("--poll-us", "PollUs", "N", "How long a reactor polls before it sleeps, 0 to 1000000 microseconds [default: 32]", SampleCommandLine.WholeNumber(0, 1_000_000));
        cli.Flag("--buffered", "Buffered", "Use the page cache (no O_DIRECT)");
        cli.Text("--socket-dir", "SocketDir", "DIR", "Cluster node: where the sockets of the volumes attached to this node go (NAME.vm.sock, NAME.ct.sock)");
        ClusterNodeOptions.AddOptions(cli);
        cli.Flag("--verbose", "Verbose", "Log protocol details", ["-v"]);
        return cli;
    }

    /// <summary>Parses <paramref name="args"/> and reads the settings. Null when the program should exit with
    /// <paramref name="exitCode"/> (help: 0; a mistake: 2, said on stderr).</summary>
    public static (HybridOptions Options, ConfigurationManager Configuration)? Load(string[] args, out int exitCode)
    {
        var cli = CommandLine();
        if (cli.Parse(args, out exitCode) is not { } result)
        {
            return null;
        }

        try
        {
            var configuration = cli.Configuration(result);
            return (FromConfiguration(cli, configuration), configuration);
        }
        catch (UsageException e)
        {
            Console.Error.WriteLine($"{Program}: {e.Message}");
            exitCode = 2;
            return null;
        }
    }

    private static HybridOptions FromConfiguration(SampleCommandLine cli, IConfiguration c)
    {
        cli.RejectUnknown(c, cli.Keys);
        var o = new HybridOptions
        {
            Backing = c["Backing"],
            IoEngine = SampleCommandLine.Checked(c, "IoEngine", "--ioengine", s_engines) ?? "io_uring",
            Scheduler = SampleCommandLine.Checked(c, "Scheduler", "--scheduler", s_schedulers) ?? "hybrid",
            Reactors = SampleCommandLine.Int(c, "Reactors", "--reactors", 1, 64, 1),
            LatencyTolerance = SampleCommandLine.Checked(c, "LatencyTolerance", "--latency-tolerance", s_tolerance) is { } tolerance
                ? double.Parse(tolerance, NumberStyles.Float, CultureInfo.InvariantCulture)
                : new HybridSchedulerOptions().ContainerLatencyTolerance,
            PollMicroseconds = SampleCommandLine.Int(c, "PollUs", "--poll-us", 0, 1_000_000, 32),
            Buffered = SampleCommandLine.Bool(c, "Buffered", "--buffered"),
            Verbose = SampleCommandLine.Bool(c, "Verbose", "--verbose"),
            SocketDir = c["SocketDir"],
            Cluster = ClusterNodeOptions.FromConfiguration(c),
        };
        o.VmSockets.AddRange(SampleCommandLine.Strings(c, "VmSocket"));
        o.ContainerSockets.AddRange(SampleCommandLine.Strings(c, "ContainerSocket"));
        if (SampleCommandLine.Checked(c, "Size", "--size", SampleCommandLine.Size) is { } size)
        {
            SizeText.TryParse(size, out long bytes);
            o.Size = bytes;
        }

        AddPeers(SampleCommandLine.Strings(c, "ContainerAllow"), "--container-allow", o.ContainerUsers, o.ContainerGroups);
        AddPeers(SampleCommandLine.Strings(c, "VmAllow"), "--vm-allow", o.VmUsers, o.VmGroups);
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

        return o;
    }

    private static string? Peer(string text)
    {
        int colon = text.IndexOf(':');
        string kind = colon < 0 ? "" : text[..colon];
        return colon < 0 || kind is not ("uid" or "gid") || !uint.TryParse(text.AsSpan(colon + 1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out _)
            ? "expected uid:N or gid:N (a number, e.g. uid:1000)"
            : null;
    }

    private static void AddPeers(List<string> texts, string option, List<uint> users, List<uint> groups)
    {
        foreach (string text in texts)
        {
            if (Peer(text) is { } problem)
            {
                throw new UsageException($"{option} {text} (from --config or the environment): {problem}");
            }

            uint id = uint.Parse(text.AsSpan(text.IndexOf(':') + 1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture);
            (text.StartsWith("uid", StringComparison.Ordinal) ? users : groups).Add(id);
        }
    }
}
