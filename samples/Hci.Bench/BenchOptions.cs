using System.Globalization;
using Hci.Core.Devices;
using Hci.Samples.Shared;

namespace Hci.Bench;

internal enum Pattern
{
    Read,
    Write,
    RandRead,
    RandWrite,
    RandRw,
}

/// <summary>hci-bench's options, named as fio names them where the two share a meaning.</summary>
internal sealed class BenchOptions
{
    public string? FileName { get; set; }

    public long Size { get; set; }

    public Pattern Rw { get; set; } = Pattern.RandRead;

    public int RwMixRead { get; set; } = 50;

    public int BlockSize { get; set; } = 4096;

    public int IoDepth { get; set; } = 1;

    public int NumJobs { get; set; } = 1;

    public double RuntimeSeconds { get; set; }

    public double RampSeconds { get; set; }

    public bool TimeBased { get; set; }

    public bool Direct { get; set; } = true;

    public BlockEngine Engine { get; set; } = BlockEngine.IoUring;

    public bool Json { get; set; }

    public string JobName { get; set; } = "hci";

    public bool FixedBuffers { get; set; } = true;

    /// <summary>--ioengine=vhost-user: the device is a vhost-user-blk back-end reached at --filename.</summary>
    public bool VhostUser { get; set; }

    /// <summary>--hipri: poll for completions instead of sleeping (vhost-user).</summary>
    public bool Polling { get; set; }

    public bool TemporaryFile { get; set; }

    /// <summary>--breakdown: print the time requests spent in each stage (RequestStages) over the measured window.</summary>
    public bool Breakdown { get; set; }

    /// <summary>--offset: where the jobs' region starts; with it, --size is the region's length (to the end when 0).</summary>
    public long Offset { get; set; }

    /// <summary>--verify: every write carries its block, a generation and a hash; every read of a block this run wrote
    /// is checked against the last generation written there (jobs get disjoint parts of the region).</summary>
    public bool Verify { get; set; }

    public bool IsRead => Rw is Pattern.Read or Pattern.RandRead;

    public bool IsRandom => Rw is Pattern.RandRead or Pattern.RandWrite or Pattern.RandRw;

    public const string Program = "hci-bench";

    private const string Description = """
        hci-bench: a load generator over any Hci device, with fio's option names.

        With no options: 10 s of 4 KiB random reads at QD32 on a temporary file. As in fio, options are written
        as --name=value or --name value, with '_' or '-' in their names. Settings also come from a
        JSON file (--config FILE) whose names are fio's, e.g. {"rw": "randwrite", "iodepth": 8, "time_based": 1,
        "runtime": "5s"}, and from environment variables HCI_BENCH_NAME (HCI_BENCH_IODEPTH=8,
        HCI_BENCH_OUTPUT_FORMAT=json); the command line overrides both. hci-bench contention --help: the contention
        experiment (the paper's Fig. 6).
        """;

    private static readonly Setting<BenchOptions>[] s_settings =
    [
        new("--filename", "PATH", "File or block device (created at --size if missing); with --ioengine=vhost-user, the back-end's socket [default: a temporary file of 256 MiB]", (o, v) => o.FileName = v),
        new("--size", "BYTES", "Device size; suffixes k, m, g, t (powers of 1024); with --offset, the region's length", (o, v) => o.Size = ParseBytes("size", v)),
        new("--rw", "read|write|randread|randwrite|randrw", "The pattern [default: randread]", (o, v) => o.Rw = ParsePattern(v), ["--readwrite"]),
        new("--rwmixread", "PCT", "Share of reads for randrw, 0 to 100 [default: 50]", (o, v) => o.RwMixRead = ParseInt("rwmixread", v, 0, 100)),
        new("--bs", "BYTES", "Block size, 512 bytes to 16 MiB [default: 4k]", (o, v) => o.BlockSize = ParseBlockSize(v), ["--blocksize"]),
        new("--iodepth", "N", "Requests in flight per job, 1 to 4096 [default: 1; 32 with no options]", (o, v) => o.IoDepth = ParseInt("iodepth", v, 1, 4096)),
        new("--numjobs", "N", "Jobs, each on its own thread and queue, 1 to 256 [default: 1]", (o, v) => o.NumJobs = ParseInt("numjobs", v, 1, 256)),
        new("--runtime", "SECONDS", "Stop after this long (suffixes ms, s, m)", (o, v) => o.RuntimeSeconds = ParseSeconds("runtime", v)),
        new("--time_based", "0|1", "Run for --runtime even when --size bytes are done (alone: 1)", (o, v) => o.TimeBased = ParseBool("time_based", v), OptionalValue: true),
        new("--ramp_time", "SECONDS", "Run this long before measuring", (o, v) => o.RampSeconds = ParseSeconds("ramp_time", v)),
        new("--direct", "0|1", "O_DIRECT [default: 1]", (o, v) => o.Direct = ParseBool("direct", v)),
        new("--ioengine", "io_uring|file|memory|null|vhost-user", "How the device is driven; vhost-user connects to the vhost-user-blk back-end whose socket is --filename [default: io_uring]", (o, v) => o.SetEngine(v)),
        new("--hipri", "0|1", "vhost-user: poll the used ring instead of sleeping on interrupts (alone: 1)", (o, v) => o.Polling = ParseBool("hipri", v), OptionalValue: true),
        new("--output-format", "normal|json", "The report's format [default: normal]", (o, v) => o.Json = ParseFormat(v)),
        new("--name", "NAME", "The job's name [default: hci]", (o, v) => o.JobName = v),
        new("--fixedbufs", "0|1", "Register buffers with io_uring [default: 1]", (o, v) => o.FixedBuffers = ParseBool("fixedbufs", v)),
        new("--breakdown", "0|1", "Print the requests' time per stage (front-end, scheduler, throttle, device, replication, completion) over the measured window, from this process's view; a host prints its own view when it stops (alone: 1)", (o, v) => o.Breakdown = ParseBool("breakdown", v), OptionalValue: true),
        new("--offset", "BYTES", "Work from offset to offset + size, or to the device's end if that comes first [default: 0]", (o, v) => o.Offset = v.Trim() == "0" ? 0 : ParseBytes("offset", v)),
        new("--verify", "crc32c|0", "Write blocks that name themselves (block, generation, hash) and check every read of a block this run wrote; a mismatch stops the run with exit status 1 (with write, randwrite or randrw; each job verifies its own part of the region) [default: 0]", (o, v) => o.Verify = ParseVerify(v)),
        new("--group_reporting", "0|1", "Accepted for fio's sake: hci-bench always reports its jobs as one group", (_, _) => { }, OptionalValue: true),
        new("--thread", "0|1", "Accepted for fio's sake: jobs are always threads", (_, _) => { }, OptionalValue: true),
    ];

    /// <summary>The command line: every option, spelled with '_' or '-'.</summary>
    public static SampleCommandLine CommandLine() => Setting<BenchOptions>.CommandLine(new SampleCommandLine(Program, Description, "HCI_BENCH_", keyExample: "\"time_based\" for --time_based, \"output_format\" for --output-format"), s_settings);

    /// <summary>Parses <paramref name="args"/> and reads the settings (the --config file, HCI_BENCH_ variables).</summary>
    /// <exception cref="BenchHelpException">Help was asked for: print it.</exception>
    /// <exception cref="BenchUsageException">A mistake; the message says what to fix.</exception>
    public static BenchOptions Parse(string[] args)
    {
        var cli = CommandLine();
        var c = Setting<BenchOptions>.Configuration(cli, args);
        var o = new BenchOptions();
        bool sawRuntime = false;
        if (args.Length == 0)
        {
            // The embedded default job.
            o.IoDepth = 32;
            o.RuntimeSeconds = 10;
            o.TimeBased = true;
            sawRuntime = true;
        }

        Setting<BenchOptions>.Apply(cli, c, s_settings, o);
        sawRuntime |= c["runtime"] != null;

        if (o.VhostUser && o.FileName == null)
        {
            throw new BenchUsageException("--ioengine=vhost-user needs --filename=SOCKET (the back-end's vhost-user socket)");
        }

        if (o.FileName == null && o.Engine is BlockEngine.IoUring or BlockEngine.File)
        {
            o.TemporaryFile = true;
            if (o.Size == 0)
            {
                o.Size = 256L << 20;
            }
        }

        if (o.Engine is BlockEngine.Memory or BlockEngine.Null && o.Size == 0)
        {
            throw new BenchUsageException($"--ioengine={(o.Engine == BlockEngine.Memory ? "memory" : "null")} needs --size");
        }

        if (o.Size != 0 && o.Size < o.BlockSize)
        {
            throw new BenchUsageException($"--size={o.Size} is smaller than --bs={o.BlockSize}");
        }

        if (o.Offset % o.BlockSize != 0)
        {
            throw new BenchUsageException($"--offset={o.Offset} is not a multiple of --bs={o.BlockSize}");
        }

        if (o.Verify && o.Rw is Pattern.Read or Pattern.RandRead)
        {
            throw new BenchUsageException("--verify needs a job that writes (--rw=write, randwrite or randrw): it checks reads against what this run wrote");
        }

        if (o.Verify && o.BlockSize < 512)
        {
            throw new BenchUsageException("--verify needs --bs of at least 512 (each block carries a 32-byte header)");
        }

        if (o.TimeBased && !sawRuntime)
        {
            throw new BenchUsageException("--time_based needs --runtime");
        }

        return o;
    }

    private static Pattern ParsePattern(string text) => text switch
    {
        "read" => Pattern.Read,
        "write" => Pattern.Write,
        "randread" => Pattern.RandRead,
        "randwrite" => Pattern.RandWrite,
        "randrw" or "rw" => Pattern.RandRw,
        var v => throw new BenchUsageException($"--rw={v} is not supported: use read, write, randread, randwrite or randrw"),
    };

    private static int ParseBlockSize(string text)
    {
        long bs = ParseBytes("bs", text);
        if (bs < 512 || bs > (16 << 20))
        {
            throw new BenchUsageException($"--bs={bs} is out of range: use 512 bytes to 16 MiB");
        }

        return (int)bs;
    }

    private static bool ParseFormat(string text) => text switch
    {
        "normal" => false,
        "json" => true,
        var v => throw new BenchUsageException($"--output-format={v} is not supported: use normal or json"),
    };

    private static bool ParseVerify(string text) => text.ToLowerInvariant() switch
    {
        "crc32c" or "xxhash" or "pattern" or "1" or "true" => true,
        "0" or "none" or "false" => false,
        var v => throw new BenchUsageException($"--verify={v} is not supported: use crc32c (any hash: hci-bench uses XxHash3) or 0"),
    };

    private void SetEngine(string text)
    {
        Engine = text switch
        {
            "io_uring" => BlockEngine.IoUring,
            "file" or "psync" => BlockEngine.File,
            "memory" => BlockEngine.Memory,
            "null" => BlockEngine.Null,
            "vhost-user" or "vhost_user" => BlockEngine.Auto,
            var v => throw new BenchUsageException($"--ioengine={v} is not supported: use io_uring, file, memory, null or vhost-user"),
        };
        VhostUser = Engine == BlockEngine.Auto;
    }

    public static long ParseBytes(string name, string text)
    {
        string t = text.Trim().ToLowerInvariant();
        if (t.EndsWith("ib", StringComparison.Ordinal))
        {
            t = t[..^2];
        }
        else if (t.EndsWith('b'))
        {
            t = t[..^1];
        }

        long multiplier = 1;
        if (t.Length > 0 && char.IsLetter(t[^1]))
        {
            multiplier = t[^1] switch
            {
                'k' => 1L << 10,
                'm' => 1L << 20,
                'g' => 1L << 30,
                't' => 1L << 40,
                _ => throw new BenchUsageException($"--{name}={text}: unknown suffix '{t[^1]}' (use k, m, g or t)"),
            };
            t = t[..^1];
        }

        if (!long.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out long n) || n <= 0 || n > long.MaxValue / multiplier)
        {
            throw new BenchUsageException($"--{name}={text} is not a positive size");
        }

        return n * multiplier;
    }

    internal static double ParseSeconds(string name, string text)
    {
        string t = text.Trim().ToLowerInvariant();
        double scale = 1;
        if (t.EndsWith("ms", StringComparison.Ordinal))
        {
            scale = 0.001;
            t = t[..^2];
        }
        else if (t.EndsWith('s'))
        {
            t = t[..^1];
        }
        else if (t.EndsWith('m'))
        {
            scale = 60;
            t = t[..^1];
        }

        if (!double.TryParse(t, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) || v < 0 || double.IsInfinity(v))
        {
            throw new BenchUsageException($"--{name}={text} is not a duration");
        }

        return v * scale;
    }

    internal static int ParseInt(string name, string text, int min, int max)
    {
        if (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int v) || v < min || v > max)
        {
            throw new BenchUsageException($"--{name}={text}: expected a whole number from {min} to {max}");
        }

        return v;
    }

    internal static bool ParseBool(string name, string text) => text.ToLowerInvariant() switch
    {
        "1" or "true" or "on" or "yes" => true,
        "0" or "false" or "off" or "no" => false,
        _ => throw new BenchUsageException($"--{name}={text}: expected 0 or 1"),
    };
}

internal sealed class BenchUsageException(string message) : Exception(message);

/// <summary>Help was asked for; <see cref="Print"/> prints it.</summary>
internal sealed class BenchHelpException(System.CommandLine.ParseResult result) : Exception("help")
{
    public void Print() => SampleCommandLine.PrintHelpIfAsked(result);
}
