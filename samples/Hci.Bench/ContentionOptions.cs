using System.Globalization;
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

    public const string Usage = """
        hci-bench contention: a container-class load (direct) and a VM-class load (with a per-I/O virtualization
        cost on both sides of each I/O) on one io_uring device, each alone and then together, under a scheduler.

        usage: hci-bench contention [options]
          --filename=PATH          file or block device (default: a temporary file of --size)
          --size=BYTES             default 1g
          --runtime=SECONDS        per phase (solo container, solo VM, together); default 5
          --iodepth=N              queue depth of each load; default 32
          --scheduler=KIND         fifo | limits | mclock | hybrid (default hybrid)
          --vm-overhead-us=US      virtualization cost added before and after each VM I/O; default 16
          --bs=BYTES               default 4k
          --rounds=N               repeat the three phases N times, alternating, and report medians (default 1)
          --sweep                  iodepth 1, 2, 4 ... 128: prints the paper's Fig. 6 table and writes CSV
          --csv=PATH               where --sweep writes (default contention-SCHEDULER.csv)
          --output-format=FMT      normal | json
        """;

    public static ContentionOptions Parse(string[] args)
    {
        var o = new ContentionOptions();
        var cursor = new OptionCursor(args);
        while (cursor.Next())
        {
            string name = cursor.Name;
            string? value = cursor.Inline;
            string Value() => cursor.Value();

            switch (name.Replace('_', '-'))
            {
                case "help":
                    throw new BenchHelpException();
                case "filename":
                    o.FileName = Value();
                    break;
                case "size":
                    o.Size = BenchOptions.ParseBytes(name, Value());
                    break;
                case "runtime":
                    string runtime = Value();
                    if (!double.TryParse(runtime.TrimEnd('s'), NumberStyles.Float, CultureInfo.InvariantCulture, out double rt) || rt <= 0)
                    {
                        throw new BenchUsageException($"--runtime={runtime}: expected a positive number of seconds");
                    }

                    o.RuntimeSeconds = rt;
                    break;
                case "iodepth":
                    string depth = Value();
                    if (!int.TryParse(depth, NumberStyles.None, CultureInfo.InvariantCulture, out int qd) || qd < 1 || qd > 1024)
                    {
                        throw new BenchUsageException($"--iodepth={depth}: expected 1 to 1024");
                    }

                    o.IoDepth = qd;
                    break;
                case "scheduler":
                    o.Scheduler = Value() switch
                    {
                        "fifo" => SchedulerKind.Fifo,
                        "limits" => SchedulerKind.Limits,
                        "mclock" => SchedulerKind.MClock,
                        "hybrid" => SchedulerKind.Hybrid,
                        var v => throw new BenchUsageException($"--scheduler={v} is not supported: use fifo, limits, mclock or hybrid"),
                    };
                    break;
                case "vm-overhead-us":
                    string overhead = Value();
                    if (!double.TryParse(overhead, NumberStyles.Float, CultureInfo.InvariantCulture, out double us) || us < 0 || us > 1_000_000)
                    {
                        throw new BenchUsageException($"--vm-overhead-us={overhead}: expected 0 to 1000000");
                    }

                    o.VmOverheadUs = us;
                    break;
                case "bs":
                    long bs = BenchOptions.ParseBytes(name, Value());
                    if (bs < 512 || bs > (1 << 20) || bs % 512 != 0)
                    {
                        throw new BenchUsageException($"--bs={bs}: expected a multiple of 512 up to 1 MiB");
                    }

                    o.BlockSize = (int)bs;
                    break;
                case "rounds":
                    string roundsText = Value();
                    if (!int.TryParse(roundsText, NumberStyles.None, CultureInfo.InvariantCulture, out int rounds) || rounds < 1 || rounds > 100)
                    {
                        throw new BenchUsageException($"--rounds={roundsText}: expected 1 to 100");
                    }

                    o.Rounds = rounds;
                    break;
                case "sweep":
                    o.Sweep = value == null || value is "1" or "true";
                    break;
                case "csv":
                    o.CsvPath = Value();
                    break;
                case "output-format":
                    o.Json = Value() switch
                    {
                        "normal" => false,
                        "json" => true,
                        var v => throw new BenchUsageException($"--output-format={v} is not supported: use normal or json"),
                    };
                    break;
                default:
                    throw new BenchUsageException($"unknown option --{name} for contention (see hci-bench contention --help)");
            }
        }

        if (o.Size < o.BlockSize * 16L)
        {
            throw new BenchUsageException($"--size={o.Size} is too small for --bs={o.BlockSize}");
        }

        return o;
    }
}
