namespace Hci.Core.Replication;

/// <summary>
/// Paces a volume's recovery copies together (resync, replica moves; copies run side by side) to a byte rate: each
/// copy takes the next slot of the rate's schedule and waits for it when it is ahead. With a latency factor the rate
/// adapts, every 100 ms, to the volume's clients: it halves (down to a floor) while their mean read and write latency
/// over those 100 ms is above the factor times their latency before the recovery, and grows by a quarter (up to the
/// configured rate) while it is not, or while they are idle. The latency before is the lowest of the clients' mean
/// latencies over the last ten seconds in which no copy ran (<see cref="Observe"/>, once a second): a burst of other
/// work before a recovery (a bulk rewrite) does not raise it, and a recovery starts (copies after 2 s without one) at
/// an eighth of the configured rate.
/// </summary>
internal sealed class RecoveryPacer
{
    /// <summary>The slowest an adapting recovery gets, so that it always ends.</summary>
    public const long FloorBytesPerSecond = 2L << 20;

    private const int MinSamples = 8;
    private const int Windows = 10;
    private readonly Func<(long Ticks, long Count)> _clientLatency;
    private readonly TimeProvider _time;
    private readonly double _latencyFrequency;
    private readonly long _max;
    private readonly double _factor;
    private readonly double _floor;
    private readonly Lock _lock = new();
    private long _next;
    private long _lastPace = long.MinValue;
    private long _lastAdjust;
    private (long Ticks, long Count) _adjusted;
    private (long Ticks, long Count) _observed;
    private long _observedAt;
    private readonly double[] _windows = new double[Windows];
    private int _windowCount;
    private int _windowNext;
    private double _rate;

    /// <param name="clientLatency">The clients' reads and writes completed so far and their latency summed; both only grow.</param>
    /// <param name="time">The clock the pace runs by.</param>
    /// <param name="latencyFrequency">Latency ticks per second.</param>
    /// <param name="maxBytesPerSecond">The configured rate; 0 for no pace.</param>
    /// <param name="latencyFactor">How much slower the clients may get; 0 for a fixed rate.</param>
    public RecoveryPacer(Func<(long Ticks, long Count)> clientLatency, TimeProvider time, long latencyFrequency, long maxBytesPerSecond, double latencyFactor)
    {
        _clientLatency = clientLatency;
        _time = time;
        _latencyFrequency = latencyFrequency;
        _max = maxBytesPerSecond;
        _factor = latencyFactor;
        _floor = Math.Min(FloorBytesPerSecond, maxBytesPerSecond);
        _rate = maxBytesPerSecond;
        _observed = clientLatency();
        _observedAt = time.GetTimestamp();
    }

    /// <summary>The rate copies run at now, bytes per second.</summary>
    public double Rate
    {
        get
        {
            lock (_lock)
            {
                return _rate;
            }
        }
    }

    /// <summary>The clients' latency before the recovery, microseconds (0 while unknown).</summary>
    public double BaselineMicroseconds
    {
        get
        {
            lock (_lock)
            {
                return Baseline() / _latencyFrequency * 1e6;
            }
        }
    }

    /// <summary>Takes the clients' mean latency since the last call into the latency before a recovery, unless a copy
    /// ran meanwhile (then that time is left out). Called about once a second.</summary>
    public void Observe()
    {
        var now = _clientLatency();
        long at = _time.GetTimestamp();
        lock (_lock)
        {
            long count = now.Count - _observed.Count;
            bool copied = _lastPace != long.MinValue && _lastPace >= _observedAt - (2 * _time.TimestampFrequency);
            if (!copied && count >= MinSamples)
            {
                _windows[_windowNext] = (double)(now.Ticks - _observed.Ticks) / count;
                _windowNext = (_windowNext + 1) % Windows;
                _windowCount = Math.Min(Windows, _windowCount + 1);
            }

            _observed = now;
            _observedAt = at;
        }
    }

    /// <summary>Takes the next slot for <paramref name="bytes"/> of copying and waits for it when ahead.</summary>
    public ValueTask PaceAsync(long bytes, CancellationToken cancellationToken)
    {
        if (_max <= 0)
        {
            return ValueTask.CompletedTask;
        }

        long now = _time.GetTimestamp();
        long frequency = _time.TimestampFrequency;
        long start;
        lock (_lock)
        {
            double rate = _factor > 0 ? Adapt(now, frequency) : _max;
            long cost = (long)(bytes * frequency / rate);
            start = Math.Max(_next, now);
            _next = start + cost;
            _lastPace = now;
        }

        var wait = TimeSpan.FromSeconds((double)(start - now) / frequency);
        return wait > TimeSpan.FromMilliseconds(1) ? new ValueTask(Task.Delay(wait, _time, cancellationToken)) : ValueTask.CompletedTask;
    }

    // The lowest window mean kept (0 when none): under the lock.
    private double Baseline()
    {
        double low = 0;
        for (int i = 0; i < _windowCount; i++)
        {
            low = i == 0 ? _windows[i] : Math.Min(low, _windows[i]);
        }

        return low;
    }

    private double Adapt(long now, long frequency)
    {
        if (_lastPace == long.MinValue || now - _lastPace > 2 * frequency)
        {
            _rate = Math.Max(_floor, _max / 8.0);
            _lastAdjust = now;
            _adjusted = _clientLatency();
            _next = now;
            return _rate;
        }

        if (now - _lastAdjust >= frequency / 10)
        {
            var latency = _clientLatency();
            long count = latency.Count - _adjusted.Count;
            double baseline = Baseline();
            bool hurt = count >= MinSamples && baseline > 0 && (double)(latency.Ticks - _adjusted.Ticks) / count > _factor * baseline;
            _rate = hurt ? Math.Max(_floor, _rate / 2) : Math.Min(_max, _rate * 1.25);
            _lastAdjust = now;
            _adjusted = latency;
        }

        return _rate;
    }
}
