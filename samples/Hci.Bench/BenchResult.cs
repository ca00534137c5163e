using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Hci.Bench;

/// <summary>What a run measured, printed like fio (normal) or in fio's JSON layout plus an "hci" object.</summary>
internal sealed class BenchResult
{
    private static readonly double[] s_percentiles = [1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 99.5, 99.9, 99.95, 99.99];

    public required BenchOptions Options { get; init; }

    public required string Engine { get; init; }

    public required LatencyHistogram Reads { get; init; }

    public required LatencyHistogram Writes { get; init; }

    public required double Seconds { get; init; }

    public required double AllocBytesPerIo { get; init; }

    public required double CpuNsPerIo { get; init; }

    public required TimeSpan UserCpu { get; init; }

    public required TimeSpan SystemCpu { get; init; }

    public required long Errors { get; init; }

    public string? FirstError { get; init; }

    public string ToText()
    {
        var o = Options;
        var sb = new StringBuilder();
        sb.AppendLine(CultureInfo.InvariantCulture, $"{o.JobName}: (g=0): rw={RwName(o.Rw)}, bs={o.BlockSize}, ioengine={Engine}, iodepth={o.IoDepth}, numjobs={o.NumJobs}, direct={(o.Direct ? 1 : 0)}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"  filename={o.FileName ?? "(none)"}, runtime={Seconds * 1000:F0}msec");
        AppendDirection(sb, "read", Reads);
        AppendDirection(sb, "write", Writes);
        long ios = Reads.Count + Writes.Count;
        sb.AppendLine(CultureInfo.InvariantCulture, $"  cpu          : usr={Percent(UserCpu)}%, sys={Percent(SystemCpu)}%, {CpuNsPerIo:F0} ns of CPU per I/O");
        sb.AppendLine(CultureInfo.InvariantCulture, $"  alloc        : {AllocBytesPerIo:F3} bytes allocated per I/O ({ios} I/Os measured)");
        if (Errors > 0)
        {
            sb.AppendLine(CultureInfo.InvariantCulture, $"  errors       : {Errors}, first: {FirstError}");
        }

        return sb.ToString();
    }

    public string ToJson()
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
        {
            var o = Options;
            w.WriteStartObject();
            w.WriteString("fio version", "hci-bench-1.0");
            w.WriteNumber("timestamp", DateTimeOffset.UtcNow.ToUnixTimeSeconds());
            w.WriteStartObject("global options");
            w.WriteString("ioengine", Engine);
            w.WriteEndObject();
            w.WriteStartArray("jobs");
            w.WriteStartObject();
            w.WriteString("jobname", o.JobName);
            w.WriteNumber("groupid", 0);
            w.WriteNumber("error", Errors > 0 ? 5 : 0);
            w.WriteNumber("elapsed", (long)Math.Round(Seconds));
            w.WriteStartObject("job options");
            w.WriteString("rw", RwName(o.Rw));
            w.WriteString("bs", o.BlockSize.ToString(CultureInfo.InvariantCulture));
            w.WriteString("iodepth", o.IoDepth.ToString(CultureInfo.InvariantCulture));
            w.WriteString("numjobs", o.NumJobs.ToString(CultureInfo.InvariantCulture));
            w.WriteString("ioengine", Engine);
            w.WriteString("direct", o.Direct ? "1" : "0");
            if (o.FileName != null)
            {
                w.WriteString("filename", o.FileName);
            }

            w.WriteEndObject();
            WriteDirection(w, "read", Reads);
            WriteDirection(w, "write", Writes);
            w.WriteNumber("usr_cpu", Percent(UserCpu));
            w.WriteNumber("sys_cpu", Percent(SystemCpu));
            w.WriteEndObject();
            w.WriteEndArray();
            w.WriteStartObject("hci");
            w.WriteNumber("alloc_bytes_per_io", Math.Round(AllocBytesPerIo, 3));
            w.WriteNumber("cpu_ns_per_io", Math.Round(CpuNsPerIo, 1));
            w.WriteString("engine", Engine);
            w.WriteNumber("total_ios", Reads.Count + Writes.Count);
            w.WriteNumber("errors", Errors);
            if (FirstError != null)
            {
                w.WriteString("first_error", FirstError);
            }

            w.WriteEndObject();
            w.WriteEndObject();
        }

        return Encoding.UTF8.GetString(stream.ToArray());
    }

    private double Percent(TimeSpan cpu) => Math.Round(cpu.TotalSeconds / Seconds * 100, 2);

    private void AppendDirection(StringBuilder sb, string name, LatencyHistogram h)
    {
        if (h.Count == 0)
        {
            return;
        }

        double iops = h.Count / Seconds;
        double bytes = h.Count * (double)Options.BlockSize;
        sb.AppendLine(CultureInfo.InvariantCulture, $"  {name}: IOPS={Human(iops)}, BW={bytes / Seconds / (1 << 20):F1}MiB/s ({bytes / Seconds / 1e6:F1}MB/s)({bytes / (1 << 20):F0}MiB/{Seconds * 1000:F0}msec)");
        sb.AppendLine(CultureInfo.InvariantCulture, $"    lat (nsec): min={h.Min}, max={h.Max}, avg={h.Mean:F2}, stdev={h.StdDev:F2}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"    lat percentiles (nsec): 50.00th=[{h.Percentile(50)}], 90.00th=[{h.Percentile(90)}], 99.00th=[{h.Percentile(99)}], 99.90th=[{h.Percentile(99.9)}], 99.99th=[{h.Percentile(99.99)}]");
    }

    private void WriteDirection(Utf8JsonWriter w, string name, LatencyHistogram h)
    {
        double bytes = h.Count * (double)Options.BlockSize;
        w.WriteStartObject(name);
        w.WriteNumber("io_bytes", (long)bytes);
        w.WriteNumber("io_kbytes", (long)(bytes / 1024));
        w.WriteNumber("bw_bytes", (long)(bytes / Seconds));
        w.WriteNumber("bw", (long)(bytes / Seconds / 1024));
        w.WriteNumber("iops", Math.Round(h.Count / Seconds, 6));
        w.WriteNumber("runtime", (long)Math.Round(Seconds * 1000));
        w.WriteNumber("total_ios", h.Count);
        w.WriteNumber("short_ios", 0);
        w.WriteNumber("drop_ios", 0);
        w.WriteStartObject("slat_ns");
        w.WriteNumber("min", 0);
        w.WriteNumber("max", 0);
        w.WriteNumber("mean", 0);
        w.WriteNumber("stddev", 0);
        w.WriteNumber("N", 0);
        w.WriteEndObject();
        foreach (var section in new[] { "clat_ns", "lat_ns" })
        {
            // Hci submits and completes on one thread, so submission latency is folded into completion latency.
            w.WriteStartObject(section);
            w.WriteNumber("min", h.Count == 0 ? 0 : h.Min);
            w.WriteNumber("max", h.Max);
            w.WriteNumber("mean", Math.Round(h.Mean, 6));
            w.WriteNumber("stddev", Math.Round(h.StdDev, 6));
            w.WriteNumber("N", h.Count);
            if (section == "clat_ns")
            {
                w.WriteStartObject("percentile");
                foreach (double p in s_percentiles)
                {
                    w.WriteNumber(p.ToString("F6", CultureInfo.InvariantCulture), h.Percentile(p));
                }

                w.WriteEndObject();
            }

            w.WriteEndObject();
        }

        w.WriteEndObject();
    }

    private static string RwName(Pattern p) => p switch
    {
        Pattern.Read => "read",
        Pattern.Write => "write",
        Pattern.RandRead => "randread",
        Pattern.RandWrite => "randwrite",
        _ => "randrw",
    };

    private static string Human(double v) => v switch
    {
        >= 1e6 => (v / 1e6).ToString("F2", CultureInfo.InvariantCulture) + "M",
        >= 1e3 => (v / 1e3).ToString("F1", CultureInfo.InvariantCulture) + "k",
        _ => v.ToString("F0", CultureInfo.InvariantCulture),
    };
}
