using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Runtime.CompilerServices;

namespace Hci.Core.Blocks;

/// <summary>The stages a request passes through between a front-end and the device: the paper's latency breakdown
/// (its Fig. 3), recorded for every request a front-end traces.</summary>
public enum RequestStage
{
    /// <summary>Front-end receive and parse: from when the front-end took the request (a virtqueue descriptor popped, an
    /// iSCSI command read) to its submission to the first block queue.</summary>
    FrontEnd = 0,

    /// <summary>Waiting in a scheduler's queue for its turn (not throttled).</summary>
    Scheduler = 1,

    /// <summary>Waiting in a scheduler's queue while its tenant was throttled.</summary>
    Throttle = 2,

    /// <summary>At the device: from submission (or the scheduler's release) to the device's completion.</summary>
    Device = 3,

    /// <summary>A replicated volume's write or read across its replicas (the "device" of a replicated volume).</summary>
    Replication = 4,

    /// <summary>Completion and notification: from the device's completion until the front-end has answered (used ring
    /// written and interrupt raised, iSCSI response sent).</summary>
    Completion = 5,
}

/// <summary>
/// Per-stage latency histograms of every traced request, per class (<see cref="IoClass"/>), recorded on the data path
/// with no allocation and no lock (each thread records into histograms of its own; readers sum them), and published as
/// the <see cref="MeterName"/> meter. A front-end traces a request with <see cref="BlockRequest.StartTrace()"/> and
/// <see cref="BlockRequest.EndTrace()"/>; block queues and schedulers mark the stages in between.
/// </summary>
/// <remarks>Recording is on by default; <c>HCI_REQUEST_STAGES=0</c> in the environment, or <see cref="Enabled"/> =
/// false, turns it off (each traced request then costs one branch). Histogram buckets are an eighth of a power of two
/// wide: percentiles are accurate to about 12%.</remarks>
public static class RequestStages
{
    /// <summary>The meter's name: gauges <c>hci.request.stage.mean</c>, <c>hci.request.stage.p50</c>,
    /// <c>hci.request.stage.p99</c> (microseconds) and counter <c>hci.request.stage.count</c>, tagged
    /// <c>hci.io.class</c> and <c>hci.stage</c>.</summary>
    public const string MeterName = "Hci.Core.Stages";

    /// <summary>Stages there are.</summary>
    public const int StageCount = 6;

    internal const int Classes = 3;
    private const int SubBits = 3;
    private const int Buckets = 64 << SubBits;

    private static readonly Lock s_sync = new();
    private static readonly List<Recorder> s_recorders = [];
    private static readonly double s_nsPerTick = 1e9 / Stopwatch.Frequency;
    private static readonly bool s_ticksAreNs = Stopwatch.Frequency == 1_000_000_000;
    private static readonly Meter s_meter = new(MeterName);

    [ThreadStatic]
    private static Recorder? t_recorder;

    static RequestStages()
    {
        Enabled = Environment.GetEnvironmentVariable("HCI_REQUEST_STAGES") != "0";
        s_meter.CreateObservableGauge("hci.request.stage.mean", () => Measure(s => s.MeanMicroseconds), "us", "Mean time traced requests spent in the stage.");
        s_meter.CreateObservableGauge("hci.request.stage.p50", () => Measure(s => s.Percentile(0.50)), "us", "Median time traced requests spent in the stage.");
        s_meter.CreateObservableGauge("hci.request.stage.p99", () => Measure(s => s.Percentile(0.99)), "us", "99th percentile of the time traced requests spent in the stage.");
        s_meter.CreateObservableCounter("hci.request.stage.count", () => Measure(s => s.Count), "{request}", "Traced requests that passed through the stage.");
    }

    /// <summary>Whether front-ends trace their requests (read at each <see cref="BlockRequest.StartTrace()"/>).</summary>
    public static bool Enabled { get; set; }

    /// <summary>The stages of every traced request so far, per class.</summary>
    /// <returns>A copy: one <see cref="StageStatistics"/> per class and stage.</returns>
    public static StageBreakdown Snapshot()
    {
        var counts = new long[Classes * StageCount * Buckets];
        var sums = new long[Classes * StageCount];
        var totals = new long[Classes];
        lock (s_sync)
        {
            foreach (var r in s_recorders)
            {
                for (int i = 0; i < counts.Length; i++)
                {
                    counts[i] += Volatile.Read(ref r.Counts[i]);
                }

                for (int i = 0; i < sums.Length; i++)
                {
                    sums[i] += Volatile.Read(ref r.SumNs[i]);
                }

                for (int i = 0; i < totals.Length; i++)
                {
                    totals[i] += Volatile.Read(ref r.Requests[i]);
                }
            }
        }

        var stats = new StageStatistics[Classes, StageCount];
        for (int c = 0; c < Classes; c++)
        {
            for (int s = 0; s < StageCount; s++)
            {
                int at = ((c * StageCount) + s) * Buckets;
                stats[c, s] = new StageStatistics((IoClass)c, (RequestStage)s, counts.AsSpan(at, Buckets).ToArray(), sums[(c * StageCount) + s], totals[c]);
            }
        }

        return new StageBreakdown(stats, totals);
    }

    /// <summary>Makes the calling thread's histograms now (about 74 KiB), so that its first traced request allocates
    /// nothing: reactors call it when they start. Nothing when <see cref="Enabled"/> is false.</summary>
    public static void PrepareThread()
    {
        if (Enabled && t_recorder == null)
        {
            CreateRecorder();
        }
    }

    internal static void Record(IoClass ioClass, ref StageTicks ticks)
    {
        var r = t_recorder ?? CreateRecorder();
        int c = (int)ioClass % Classes;
        r.Requests[c]++;
        for (int s = 0; s < StageCount; s++)
        {
            long t = ticks[s];
            if (t <= 0)
            {
                continue; // the request did not pass through this stage
            }

            long ns = s_ticksAreNs ? t : (long)(t * s_nsPerTick);
            int i = (c * StageCount) + s;
            r.SumNs[i] += ns;
            r.Counts[(i * Buckets) + Bucket(ns)]++;
        }
    }

    /// <summary>The bucket of <paramref name="ns"/>: values below 8 ns one each, then 8 per power of two.</summary>
    internal static int Bucket(long ns)
    {
        if (ns < (1 << SubBits))
        {
            return (int)Math.Max(ns, 0);
        }

        int log = 63 - System.Numerics.BitOperations.LeadingZeroCount((ulong)ns);
        int sub = (int)(ns >> (log - SubBits)) & ((1 << SubBits) - 1);
        return Math.Min(((log - SubBits + 1) << SubBits) + sub, Buckets - 1);
    }

    /// <summary>The upper bound of bucket <paramref name="bucket"/> in nanoseconds (what a percentile reports).</summary>
    internal static long BucketTop(int bucket)
    {
        if (bucket < (1 << SubBits))
        {
            return bucket;
        }

        int log = (bucket >> SubBits) + SubBits - 1;
        long sub = bucket & ((1 << SubBits) - 1);
        return ((1L << SubBits) + sub + 1) << (log - SubBits);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static Recorder CreateRecorder()
    {
        var r = new Recorder();
        lock (s_sync)
        {
            s_recorders.Add(r);
        }

        t_recorder = r;
        return r;
    }

    private static IEnumerable<Measurement<T>> Measure<T>(Func<StageStatistics, T> pick)
        where T : struct
    {
        var snapshot = Snapshot();
        foreach (var s in snapshot.All)
        {
            if (s.Count > 0)
            {
                yield return new Measurement<T>(pick(s), new KeyValuePair<string, object?>("hci.io.class", s.Class.ToString().ToLowerInvariant()), new KeyValuePair<string, object?>("hci.stage", s.Stage.ToString()));
            }
        }
    }

    private sealed class Recorder
    {
        public readonly long[] Counts = new long[Classes * StageCount * Buckets];
        public readonly long[] SumNs = new long[Classes * StageCount];
        public readonly long[] Requests = new long[Classes];
    }
}

/// <summary>The ticks a request spent in each <see cref="RequestStage"/> (inline: no allocation).</summary>
[InlineArray(RequestStages.StageCount)]
internal struct StageTicks
{
    private long _first;
}

/// <summary>One stage of one class: how many traced requests passed through it and how long they stayed.</summary>
public sealed class StageStatistics
{
    private readonly long[] _buckets;

    internal StageStatistics(IoClass ioClass, RequestStage stage, long[] buckets, long sumNs, long requests)
    {
        Class = ioClass;
        Stage = stage;
        _buckets = buckets;
        Count = buckets.Sum();
        MeanMicroseconds = Count == 0 ? 0 : sumNs / 1000.0 / Count;
        Requests = requests;
    }

    /// <summary>The class.</summary>
    public IoClass Class { get; }

    internal long[] BucketsCopy => _buckets;

    /// <summary>The stage.</summary>
    public RequestStage Stage { get; }

    /// <summary>Traced requests that spent time in the stage.</summary>
    public long Count { get; }

    /// <summary>Traced requests of the class in all (whether or not they passed through this stage).</summary>
    public long Requests { get; }

    /// <summary>Mean time in the stage of the requests that passed through it, in microseconds.</summary>
    public double MeanMicroseconds { get; }

    /// <summary>A percentile of the time in the stage, in microseconds (the top of its histogram bucket).</summary>
    /// <param name="quantile">From 0 to 1.</param>
    /// <returns>The percentile; 0 when no request passed through the stage.</returns>
    public double Percentile(double quantile)
    {
        if (Count == 0)
        {
            return 0;
        }

        long rank = Math.Max(1, (long)Math.Ceiling(quantile * Count));
        long seen = 0;
        for (int b = 0; b < _buckets.Length; b++)
        {
            seen += _buckets[b];
            if (seen >= rank)
            {
                return RequestStages.BucketTop(b) / 1000.0;
            }
        }

        return RequestStages.BucketTop(_buckets.Length - 1) / 1000.0;
    }
}

/// <summary>The stage statistics of every class, as <see cref="RequestStages.Snapshot"/> took them.</summary>
public sealed class StageBreakdown
{
    private readonly StageStatistics[,] _stats;
    private readonly long[] _requests;

    internal StageBreakdown(StageStatistics[,] stats, long[] requests)
    {
        _stats = stats;
        _requests = requests;
    }

    /// <summary>Every class and stage.</summary>
    public IEnumerable<StageStatistics> All => _stats.Cast<StageStatistics>();

    /// <summary>One class's stage.</summary>
    /// <param name="ioClass">The class.</param>
    /// <param name="stage">The stage.</param>
    /// <returns>Its statistics.</returns>
    public StageStatistics this[IoClass ioClass, RequestStage stage] => _stats[(int)ioClass % RequestStages.Classes, (int)stage];

    /// <summary>Traced requests of <paramref name="ioClass"/>.</summary>
    /// <param name="ioClass">The class.</param>
    /// <returns>How many were traced.</returns>
    public long Requests(IoClass ioClass) => _requests[(int)ioClass % RequestStages.Classes];

    /// <summary>What was recorded since <paramref name="earlier"/> (for a measurement window).</summary>
    /// <param name="earlier">A snapshot taken before this one.</param>
    /// <returns>The difference.</returns>
    public StageBreakdown Since(StageBreakdown earlier)
    {
        ArgumentNullException.ThrowIfNull(earlier);
        var stats = new StageStatistics[RequestStages.Classes, RequestStages.StageCount];
        var requests = new long[RequestStages.Classes];
        for (int c = 0; c < RequestStages.Classes; c++)
        {
            requests[c] = _requests[c] - earlier._requests[c];
            for (int s = 0; s < RequestStages.StageCount; s++)
            {
                var now = _stats[c, s];
                var before = earlier._stats[c, s];
                var buckets = new long[now.BucketsCopy.Length];
                for (int b = 0; b < buckets.Length; b++)
                {
                    buckets[b] = now.BucketsCopy[b] - before.BucketsCopy[b];
                }

                double sum = (now.MeanMicroseconds * now.Count) - (before.MeanMicroseconds * before.Count);
                stats[c, s] = new StageStatistics((IoClass)c, (RequestStage)s, buckets, (long)(sum * 1000), requests[c]);
            }
        }

        return new StageBreakdown(stats, requests);
    }

    /// <summary>A table, one line per class that has traced requests and per stage it passed through: count, mean,
    /// p50 and p99 in microseconds, and the stage's share of the mean total.</summary>
    /// <param name="prefix">Put before every line (a host's name, say).</param>
    /// <returns>The lines.</returns>
    public IEnumerable<string> Format(string prefix = "")
    {
        for (int c = 0; c < RequestStages.Classes; c++)
        {
            long requests = _requests[c];
            if (requests == 0)
            {
                continue;
            }

            double total = 0;
            for (int s = 0; s < RequestStages.StageCount; s++)
            {
                total += _stats[c, s].MeanMicroseconds * _stats[c, s].Count / requests;
            }

            yield return $"{prefix}{(IoClass)c} requests: {requests}, mean {total:F1} us in all";
            for (int s = 0; s < RequestStages.StageCount; s++)
            {
                var st = _stats[c, s];
                if (st.Count == 0)
                {
                    continue;
                }

                double share = total == 0 ? 0 : st.MeanMicroseconds * st.Count / requests / total;
                yield return $"{prefix}  {st.Stage,-12} {st.Count,10} requests  mean {st.MeanMicroseconds,9:F1} us  p50 {st.Percentile(0.5),9:F1} us  p99 {st.Percentile(0.99),9:F1} us  {share,6:P0}";
            }
        }
    }
}
