using Hci.Core.Devices;
using Hci.Samples.Shared;
using Hci.Scheduling;
using Microsoft.Extensions.Configuration;

namespace Hci.Samples.VmType;

/// <summary>hci-vmtype's settings: its command line (System.CommandLine), a JSON file, the environment.</summary>
internal sealed class VmTypeOptions
{
    public const string Program = "hci-vmtype";

    private const string Description = """
        hci-vmtype: export an Hci volume over iSCSI.

          hci-vmtype --portal HOST:PORT --iqn IQN (--backing FILE_OR_DEVICE [--size BYTES] | --size BYTES) [options]
          hci-vmtype --portal HOST:PORT --iqn IQN (--etcd URL | --data-dir DIR) --node ID --device FILE[:SIZE] [options]

        As a cluster node, every volume attached to the node is a LUN of the target, numbered in attach order from 1
        (a volume keeps its LUN while the process runs). Settings also come from a JSON file (--config FILE), e.g.
        {"portal": "0.0.0.0:3260", "iqn": "...", "backing": "...", "chapUser": "...", "chapSecretFile": "..."}, and
        from environment variables HCI_VMTYPE_NAME (HCI_VMTYPE_IQN=...); the command line overrides both. The CHAP
        secrets come from files or from HCI_CHAP_SECRET and HCI_MUTUAL_CHAP_SECRET, never from the settings. It
        logs one line when the portal listens (then a systemd unit of Type=notify gets READY=1) and exits cleanly on
        SIGINT or SIGTERM.
        """;

    private static readonly Func<string, string?> s_engines = SampleCommandLine.OneOf("io_uring", "file", "memory", "null");

    private static readonly Func<string, string?> s_schedulers = SampleCommandLine.OneOf("none", "fifo", "limits", "mclock", "hybrid");

    public string Portal { get; private set; } = "0.0.0.0:3260";

    public string Iqn { get; private set; } = "";

    public string? Backing { get; private set; }

    public long? Size { get; private set; }

    public string IoEngine { get; private set; } = "io_uring";

    public BlockEngine Engine => IoEngine switch
    {
        "file" => BlockEngine.File,
        "memory" => BlockEngine.Memory,
        "null" => BlockEngine.Null,
        _ => BlockEngine.IoUring,
    };

    public int Lun { get; private set; } = 1;

    public string Scheduler { get; private set; } = "none";

    public SchedulerKind? SchedulerKind => Scheduler switch
    {
        "fifo" => Hci.Scheduling.SchedulerKind.Fifo,
        "limits" => Hci.Scheduling.SchedulerKind.Limits,
        "mclock" => Hci.Scheduling.SchedulerKind.MClock,
        "hybrid" => Hci.Scheduling.SchedulerKind.Hybrid,
        _ => null,
    };

    public bool Buffered { get; private set; }

    public TimeSpan PollWindow { get; private set; } = TimeSpan.FromMicroseconds(100);

    public string? ChapUser { get; private set; }

    public string? ChapSecretFile { get; private set; }

    /// <summary>The secret given on the command line (warned about: every user can read it).</summary>
    public string? ChapSecretOnCommandLine { get; private set; }

    public string? MutualChapUser { get; private set; }

    public string? MutualChapSecretFile { get; private set; }

    public string? MutualChapSecretOnCommandLine { get; private set; }

    public List<string> AllowedInitiators { get; } = [];

    public bool Insecure { get; private set; }

    public bool Verbose { get; private set; }

    public ClusterNodeOptions Cluster { get; private set; } = new();

    /// <summary>Parses <paramref name="args"/> and reads the settings. Null when the program should exit with
    /// <paramref name="exitCode"/> (help: 0; a mistake: 2, said on stderr).</summary>
    public static (VmTypeOptions Options, ConfigurationManager Configuration)? Load(string[] args, out int exitCode)
    {
        var cli = new SampleCommandLine(Program, Description, "HCI_VMTYPE_");
        cli.Text("--portal", "Portal", "HOST:PORT", "Where to listen: IPv4, [IPv6]:PORT, or PORT for all addresses [default: 0.0.0.0:3260]");
        cli.Text("--iqn", "Iqn", "IQN", "The target's name, e.g. iqn.2026-11.org.example:vol0 (required)");
        cli.Text("--backing", "Backing", "FILE_OR_DEVICE", "The file or block device behind the LUN (a file is created at --size if missing)");
        cli.Text("--size", "Size", "BYTES", "Volume size; suffixes k, m, g, t (powers of 1024); needed for memory and null", SampleCommandLine.Size);
        cli.Text("--ioengine", "IoEngine", "io_uring|file|memory|null", "How the device is driven [default: io_uring]", s_engines);
        cli.Text("--lun", "Lun", "N", "The LUN the volume is exported as, 0 to 16383 [default: 1]", SampleCommandLine.WholeNumber(0, 16383));
        cli.Text("--scheduler", "Scheduler", "none|fifo|limits|mclock|hybrid", "The I/O scheduler: each session's I/O enters it as class vm, its tenant the session's number [default: none]", s_schedulers);
        cli.Flag("--buffered", "Buffered", "Use the page cache instead of O_DIRECT");
        cli.Text("--poll-us", "PollUs", "N", "How long a connection's thread keeps polling after work before it sleeps, 0 to 1000 microseconds [default: 100]", SampleCommandLine.WholeNumber(0, 1000));
        cli.Text("--chap-user", "ChapUser", "USER", "Require CHAP as USER; the secret (at least 12 bytes) comes from --chap-secret-file or the environment variable HCI_CHAP_SECRET");
        cli.Text("--chap-secret-file", "ChapSecretFile", "FILE", "The CHAP secret: the first line of FILE");
        var chapSecret = cli.Text("--chap-secret", "ChapSecret", "SECRET", "The CHAP secret on the command line: every user sees it in /proc/PID/cmdline, so it is warned about; use --chap-secret-file or HCI_CHAP_SECRET", setting: false);
        cli.Text("--mutual-chap-user", "MutualChapUser", "USER", "Answer mutual CHAP as USER, with the secret from --mutual-chap-secret-file or HCI_MUTUAL_CHAP_SECRET");
        cli.Text("--mutual-chap-secret-file", "MutualChapSecretFile", "FILE", "The mutual CHAP secret: the first line of FILE");
        var mutualSecret = cli.Text("--mutual-chap-secret", "MutualChapSecret", "SECRET", "The mutual CHAP secret on the command line (warned about, as --chap-secret)", setting: false);
        cli.Repeatable("--allow-initiator", "AllowInitiator", "IQN", "Only this initiator may log in (repeatable) [default: any]");
        cli.Flag("--insecure", "Insecure", "Allow logins without CHAP (required when no --chap-user is given)");
        ClusterNodeOptions.AddOptions(cli);
        cli.Flag("--verbose", "Verbose", "Log protocol details (never secrets)");
        if (cli.Parse(args, out exitCode) is not { } result)
        {
            return null;
        }

        try
        {
            var configuration = cli.Configuration(result);
            var o = FromConfiguration(cli, configuration);
            o.ChapSecretOnCommandLine = result.GetValue(chapSecret)?.LastOrDefault();
            o.MutualChapSecretOnCommandLine = result.GetValue(mutualSecret)?.LastOrDefault();
            return (o, configuration);
        }
        catch (UsageException e)
        {
            Console.Error.WriteLine($"{Program}: {e.Message}");
            exitCode = 2;
            return null;
        }
    }

    private static VmTypeOptions FromConfiguration(SampleCommandLine cli, IConfiguration c)
    {
        cli.RejectUnknown(c, cli.Keys);
        var o = new VmTypeOptions
        {
            Portal = c["Portal"] ?? "0.0.0.0:3260",
            Iqn = c["Iqn"] ?? throw new UsageException("--iqn IQN is required (see --help)"),
            Backing = c["Backing"],
            IoEngine = SampleCommandLine.Checked(c, "IoEngine", "--ioengine", s_engines) ?? "io_uring",
            Lun = SampleCommandLine.Int(c, "Lun", "--lun", 0, 16383, 1),
            Scheduler = SampleCommandLine.Checked(c, "Scheduler", "--scheduler", s_schedulers) ?? "none",
            Buffered = SampleCommandLine.Bool(c, "Buffered", "--buffered"),
            PollWindow = TimeSpan.FromMicroseconds(SampleCommandLine.Int(c, "PollUs", "--poll-us", 0, 1000, 100)),
            ChapUser = c["ChapUser"],
            ChapSecretFile = c["ChapSecretFile"],
            MutualChapUser = c["MutualChapUser"],
            MutualChapSecretFile = c["MutualChapSecretFile"],
            Insecure = SampleCommandLine.Bool(c, "Insecure", "--insecure"),
            Verbose = SampleCommandLine.Bool(c, "Verbose", "--verbose"),
            Cluster = ClusterNodeOptions.FromConfiguration(c),
        };
        if (SampleCommandLine.Checked(c, "Size", "--size", SampleCommandLine.Size) is { } size)
        {
            SizeText.TryParse(size, out long bytes);
            o.Size = bytes;
        }

        o.AllowedInitiators.AddRange(SampleCommandLine.Strings(c, "AllowInitiator"));
        o.Cluster.Check(m => new UsageException(m));
        if (o.Cluster.Enabled && (o.Backing != null || o.Size != null || c["Lun"] != null))
        {
            throw new UsageException("as a cluster node, the target exports the volumes attached to the node: --backing, --size and --lun do not apply");
        }

        if (o.ChapUser == null && !o.Insecure)
        {
            throw new UsageException("no authentication: give --chap-user with --chap-secret-file (or HCI_CHAP_SECRET), or --insecure to let any initiator log in without CHAP");
        }

        return o;
    }
}
