using System.Diagnostics.Metrics;
using Hci.Core.Blocks;
using Hci.Scheduling;

namespace Hci.Samples.Hybrid;

/// <summary>The scheduler's meter (Hci.Scheduling), summed per class for the exit lines.</summary>
internal sealed class ClassStats : IDisposable
{
    private readonly MeterListener _listener = new();
    private readonly Lock _sync = new();
    private readonly Counts[] _counts = [new(), new(), new()];

    public ClassStats()
    {
        _listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == SchedulingMetrics.MeterName)
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) => Add(instrument.Name, value, tags));
        _listener.SetMeasurementEventCallback<double>((instrument, value, tags, _) => Add(instrument.Name, value, tags));
        _listener.Start();
    }

    public Counts For(IoClass cls)
    {
        lock (_sync)
        {
            return _counts[(int)cls] with { };
        }
    }

    public void Dispose() => _listener.Dispose();

    private void Add(string name, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        int cls = -1;
        foreach (var tag in tags)
        {
            if (tag.Key == "hci.io.class")
            {
                cls = (tag.Value as string) switch { "vm" => 0, "container" => 1, "background" => 2, _ => -1 };
            }
        }

        if (cls < 0)
        {
            return;
        }

        lock (_sync)
        {
            var c = _counts[cls];
            switch (name)
            {
                case "hci.scheduler.ios": c.Ios += (long)value; break;
                case "hci.scheduler.bytes": c.Bytes += (long)value; break;
                case "hci.scheduler.throttled": c.ThrottledUs += value; break;
                case "hci.scheduler.batches": c.Batches += (long)value; break;
                case "hci.scheduler.queued": c.QueuedSum += value; c.QueuedCount++; break;
            }
        }
    }

    internal sealed record Counts
    {
        public long Ios;
        public long Bytes;
        public double ThrottledUs;
        public long Batches;
        public double QueuedSum;
        public long QueuedCount;
    }
}
