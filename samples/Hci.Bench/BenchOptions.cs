using System.Globalization;
using Hci.Core.Devices;

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

    public const string Usage = """
        hci-bench: a load generator over any Hci device, with fio's option names.

        usage: hci-bench [options]            (no options: 10 s of 4 KiB random reads at QD32 on a temporary file)
          --filename=PATH          file or block device (created at --size if missing)
          --size=BYTES             device size; suffixes k, m, g, t (powers of 1024)
          --rw=MODE                read | write | randread | randwrite | randrw   (default randread)
          --rwmixread=PCT          share of reads for randrw (default 50)
          --bs=BYTES               block size (default 4k)
          --iodepth=N              requests in flight per job (default 1)
          --numjobs=N              jobs, each on its own thread and queue (default 1)
          --runtime=SECONDS        stop after this long (suffixes ms, s, m)
          --time_based             run for --runtime even when --size bytes are done
          --ramp_time=SECONDS      run this long before measuring
          --direct=0|1             O_DIRECT (default 1)
          --ioengine=ENGINE        io_uring | file | memory | null | vhost-user (default io_uring); vhost-user
                                   connects to the vhost-user-blk back-end whose socket is --filename
          --hipri                  vhost-user: poll the used ring instead of sleeping on interrupts
          --output-format=FMT      normal | json (default normal)
          --name=NAME              job name
          --fixedbufs=0|1          register buffers with io_uring (default 1)
          --breakdown              print the requests' time per stage (front-end, scheduler, throttle, device,
                                   replication, completion) over the measured window, from this process's view;
                                   a host prints its own view when it stops
          --offset=BYTES           work from offset to offset + size, or to the device's end if that comes first
          --verify=crc32c|0        write blocks that name themselves (block, generation, hash) and check every read
                                   of a block this run wrote; a mismatch stops the run with exit status 1
                                   (with write, randwrite or randrw; each job verifies its own part of the region)
        """;

    public static BenchOptions Parse(string[] args)
    {
        var o = new BenchOptions();
        bool sawRuntime = false;
        var cursor = new OptionCursor(args);
        while (cursor.Next())
        {
            string name = cursor.Name;
            string? value = cursor.Inline;
            string Value() => cursor.Value();

            switch (name.Replace('-', '_'))
            {
                case "help":
                case "h":
                    throw new BenchHelpException();
                case "filename":
                    o.FileName = Value();
                    break;
                case "size":
                    o.Size = ParseBytes(name, Value());
                    break;
                case "rw":
                case "readwrite":
                    o.Rw = Value() switch
                    {
                        "read" => Pattern.Read,
                        "write" => Pattern.Write,
                        "randread" => Pattern.RandRead,
                        "randwrite" => Pattern.RandWrite,
                        "randrw" or "rw" => Pattern.RandRw,
                        var v => throw new BenchUsageException($"--rw={v} is not supported: use read, write, randread, randwrite or randrw"),
                    };
                    break;
                case "rwmixread":
                    o.RwMixRead = ParseInt(name, Value(), 0, 100);
                    break;
                case "bs":
                case "blocksize":
                    long bs = ParseBytes(name, Value());
                    if (bs < 512 || bs > (16 << 20))
                    {
                        throw new BenchUsageException($"--bs={bs} is out of range: use 512 bytes to 16 MiB");
                    }

                    o.BlockSize = (int)bs;
                    break;
                case "iodepth":
                    o.IoDepth = ParseInt(name, Value(), 1, 4096);
                    break;
                case "numjobs":
                    o.NumJobs = ParseInt(name, Value(), 1, 256);
                    break;
                case "runtime":
                    o.RuntimeSeconds = ParseSeconds(name, Value());
                    sawRuntime = true;
                    break;
                case "ramp_time":
                    o.RampSeconds = ParseSeconds(name, Value());
                    break;
                case "time_based":
                    o.TimeBased = value == null || ParseBool(name, value);
                    break;
                case "direct":
                    o.Direct = ParseBool(name, Value());
                    break;
                case "fixedbufs":
                    o.FixedBuffers = ParseBool(name, Value());
                    break;
                case "ioengine":
                    o.Engine = Value() switch
                    {
                        "io_uring" => BlockEngine.IoUring,
                        "file" or "psync" => BlockEngine.File,
                        "memory" => BlockEngine.Memory,
                        "null" => BlockEngine.Null,
                        "vhost-user" or "vhost_user" => BlockEngine.Auto,
                        var v => throw new BenchUsageException($"--ioengine={v} is not supported: use io_uring, file, memory, null or vhost-user"),
                    };
                    o.VhostUser = o.Engine == BlockEngine.Auto;
                    break;
                case "hipri":
                    o.Polling = value == null || ParseBool(name, value);
                    break;
                case "output_format":
                    o.Json = Value() switch
                    {
                        "normal" => false,
                        "json" => true,
                        var v => throw new BenchUsageException($"--output-format={v} is not supported: use normal or json"),
                    };
                    break;
                case "name":
                    o.JobName = Value();
                    break;
                case "breakdown":
                    o.Breakdown = value == null || ParseBool(name, value);
                    break;
                case "offset":
                {
                    string text = Value();
                    o.Offset = text.Trim() == "0" ? 0 : ParseBytes(name, text);
                    break;
                }
                case "verify":
                    o.Verify = Value() switch
                    {
                        "crc32c" or "xxhash" or "pattern" or "1" => true,
                        "0" or "none" => false,
                        var v => throw new BenchUsageException($"--verify={v} is not supported: use crc32c (any hash: hci-bench uses XxHash3) or 0"),
                    };
                    break;
                case "group_reporting":
                case "thread":
                    break; // hci-bench always reports jobs as one group, and jobs are threads
                default:
                    throw new BenchUsageException($"unknown option --{name} (see --help)");
            }
        }

        if (args.Length == 0)
        {
            // The embedded default job.
            o.IoDepth = 32;
            o.RuntimeSeconds = 10;
            o.TimeBased = true;
            sawRuntime = true;
        }

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

    private static double ParseSeconds(string name, string text)
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

    private static int ParseInt(string name, string text, int min, int max)
    {
        if (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int v) || v < min || v > max)
        {
            throw new BenchUsageException($"--{name}={text}: expected a whole number from {min} to {max}");
        }

        return v;
    }

    private static bool ParseBool(string name, string text) => text switch
    {
        "1" or "true" or "on" or "yes" => true,
        "0" or "false" or "off" or "no" => false,
        _ => throw new BenchUsageException($"--{name}={text}: expected 0 or 1"),
    };
}

internal sealed class BenchUsageException(string message) : Exception(message);

internal sealed class BenchHelpException() : Exception("help");
