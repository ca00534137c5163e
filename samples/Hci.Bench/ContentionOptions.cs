using System.Globalization;
using Hci.Samples.Shared;
using Hci.Scheduling;

namespace Hci.Bench;

/// <summary>Options of <c>hci-bench contention</c>: the paper's Fig. 6 experiment, live.</summary>
internal sealed class ContentionOptions
{
    public string? FileName { get; set; }

    public long Size { get; set; } = 1L << 30;

    public double RuntimeSeconds { get; set; } = 5;

    public int IoDepth { get; set; } = 32;

    public SchedulerKind Scheduler { get; set; } = SchedulerKind.Hybrid;

    public double VmOverheadUs { get; set; } = 16;

    public bool Json { get; set; }

    public bool Sweep { get; set; }

    public string? CsvPath { get; set; }

    public int BlockSize { get; set; } = 4096;

    public int Rounds { get; set; } = 1;

    /// <summary>The hybrid scheduler's container latency tolerance; null: its default.</summary>
    public double? LatencyTolerance { get; set; }

    /// <summary>The hybrid scheduler's container pressure depth; null: its default.</summary>
    public int? PressureDepth { get; set; }

    public const string Description = """
        hci-bench contention: a container-class load (direct) and a VM-class load (with a per-I/O virtualization
        cost on both sides of each I/O) on one io_uring device, each alone and then together, under a scheduler.
        Settings also come from a JSON file (--config FILE; names as the options', "-" written "_": {"iodepth": 8,
        "vm_overhead_us": 16}) and from environment variables HCI_BENCH_CONTENTION_NAME; the command line overrides
        both.
        """;

    private static readonly Setting<ContentionOptions>[] s_settings =
    [
        new("--filename", "PATH", "File or block device [default: a temporary file of --size]", (o, v) => o.FileName = v),
        new("--size", "BYTES", "Its size; suffixes k, m, g, t [default: 1g]", (o, v) => o.Size = BenchOptions.ParseBytes("size", v)),
        new("--runtime", "SECONDS", "Per phase (solo container, solo VM, together) [default: 5]", (o, v) => o.RuntimeSeconds = ParseRuntime(v)),
        new("--iodepth", "N", "Queue depth of each load, 1 to 1024 [default: 32]", (o, v) => o.IoDepth = ParseDepth("iodepth", v)),
        new("--scheduler", "fifo|limits|mclock|hybrid", "The scheduler both loads go through [default: hybrid]", (o, v) => o.Scheduler = ParseScheduler(v)),
        new("--vm-overhead-us", "US", "Virtualization cost added before and after each VM I/O, 0 to 1000000 [default: 16]", (o, v) => o.VmOverheadUs = ParseOverhead(v)),
        new("--bs", "BYTES", "Block size, a multiple of 512 up to 1 MiB [default: 4k]", (o, v) => o.BlockSize = ParseBlockSize(v)),
        new("--rounds", "N", "Repeat the three phases N times (1 to 100), alternating, and report medians [default: 1]", (o, v) => o.Rounds = ParseRounds(v)),
        new("--sweep", "0|1", "iodepth 1, 2, 4 ... 128: prints the paper's Fig. 6 table and writes CSV (alone: 1)", (o, v) => o.Sweep = BenchOptions.ParseBool("sweep", v), OptionalValue: true),
        new("--latency-tolerance", "X", "Hybrid: how far VMs on idle slots may raise the container's latency, 0 to 10; 0 holds VMs to their share [default: 0.03]", (o, v) => o.LatencyTolerance = ParseTolerance(v)),
        new("--pressure-depth", "N", "Hybrid: container I/Os outstanding from which VMs are held to their share, 1 to 1024 [default: 1]", (o, v) => o.PressureDepth = ParseDepth("pressure-depth", v)),
        new("--csv", "PATH", "Where --sweep writes [default: contention-SCHEDULER.csv]", (o, v) => o.CsvPath = v),
        new("--output-format", "normal|json", "The report's format [default: normal]", (o, v) => o.Json = ParseFormat(v)),
    ];

    /// <summary>The command line of <c>hci-bench contention</c>.</summary>
    public static SampleCommandLine CommandLine() =>
        Setting<ContentionOptions>.CommandLine(new SampleCommandLine(BenchOptions.Program, Description, "HCI_BENCH_CONTENTION_", "contention", "\"vm_overhead_us\" for --vm-overhead-us"), s_settings);

    /// <summary>Parses the arguments after <c>contention</c> and reads the settings.</summary>
    /// <exception cref="BenchHelpException">Help was asked for: print it.</exception>
    /// <exception cref="BenchUsageException">A mistake; the message says what to fix.</exception>
    public static ContentionOptions Parse(string[] args)
    {
        var cli = CommandLine();
        var c = Setting<ContentionOptions>.Configuration(cli, args);
        var o = new ContentionOptions();
        Setting<ContentionOptions>.Apply(cli, c, s_settings, o);
        if (o.Size < o.BlockSize * 16L)
        {
            throw new BenchUsageException($"--size={o.Size} is too small for --bs={o.BlockSize}");
        }

        return o;
    }

    private static double ParseRuntime(string runtime) =>
        double.TryParse(runtime.TrimEnd('s'), NumberStyles.Float, CultureInfo.InvariantCulture, out double rt) && rt > 0 && !double.IsInfinity(rt)
            ? rt
            : throw new BenchUsageException($"--runtime={runtime}: expected a positive number of seconds");

    private static int ParseDepth(string name, string depth) =>
        int.TryParse(depth, NumberStyles.None, CultureInfo.InvariantCulture, out int qd) && qd is >= 1 and <= 1024
            ? qd
            : throw new BenchUsageException($"--{name}={depth}: expected 1 to 1024");

    private static SchedulerKind ParseScheduler(string text) => text switch
    {
        "fifo" => SchedulerKind.Fifo,
        "limits" => SchedulerKind.Limits,
        "mclock" => SchedulerKind.MClock,
        "hybrid" => SchedulerKind.Hybrid,
        var v => throw new BenchUsageException($"--scheduler={v} is not supported: use fifo, limits, mclock or hybrid"),
    };

    private static double ParseOverhead(string overhead) =>
        double.TryParse(overhead, NumberStyles.Float, CultureInfo.InvariantCulture, out double us) && us is >= 0 and <= 1_000_000
            ? us
            : throw new BenchUsageException($"--vm-overhead-us={overhead}: expected 0 to 1000000");

    private static double ParseTolerance(string text) =>
        double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double x) && x is >= 0 and <= 10
            ? x
            : throw new BenchUsageException($"--latency-tolerance={text}: expected 0 to 10 (0.03 lets the container's latency rise 3%)");

    private static int ParseBlockSize(string text)
    {
        long bs = BenchOptions.ParseBytes("bs", text);
        return bs is >= 512 and <= (1 << 20) && bs % 512 == 0 ? (int)bs : throw new BenchUsageException($"--bs={bs}: expected a multiple of 512 up to 1 MiB");
    }

    private static int ParseRounds(string text) =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int rounds) && rounds is >= 1 and <= 100
            ? rounds
            : throw new BenchUsageException($"--rounds={text}: expected 1 to 100");

    private static bool ParseFormat(string text) => text switch
    {
        "normal" => false,
        "json" => true,
        var v => throw new BenchUsageException($"--output-format={v} is not supported: use normal or json"),
    };
}
