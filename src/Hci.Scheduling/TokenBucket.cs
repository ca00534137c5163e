namespace Hci.Scheduling;

/// <summary>A token bucket on a nanosecond clock: a rate, a burst, and the time at which a cost becomes affordable.</summary>
internal struct TokenBucket
{
    private double _tokens;
    private long _lastNs;

    public TokenBucket(double ratePerSecond, double burst)
    {
        RatePerSecond = ratePerSecond;
        Burst = Math.Max(burst, 1);
        _tokens = Burst;
        _lastNs = long.MinValue;
    }

    public double RatePerSecond { get; set; }

    public double Burst { get; set; }

    public readonly bool Unlimited => RatePerSecond <= 0;

    /// <summary>True when <paramref name="cost"/> can be paid now (the bucket may go negative by one cost, so a big I/O is never stuck).</summary>
    public bool CanSpend(double cost, long nowNs)
    {
        if (Unlimited)
        {
            return true;
        }

        Refill(nowNs);
        return _tokens >= Math.Min(cost, Burst);
    }

    public void Spend(double cost, long nowNs)
    {
        if (Unlimited)
        {
            return;
        }

        Refill(nowNs);
        _tokens -= cost;
    }

    /// <summary>When <paramref name="cost"/> will be affordable.</summary>
    public long ReadyAt(double cost, long nowNs)
    {
        if (Unlimited)
        {
            return nowNs;
        }

        Refill(nowNs);
        double missing = Math.Min(cost, Burst) - _tokens;
        return missing <= 0 ? nowNs : nowNs + (long)Math.Ceiling(missing / RatePerSecond * 1e9);
    }

    private void Refill(long nowNs)
    {
        if (_lastNs == long.MinValue)
        {
            _lastNs = nowNs;
            return;
        }

        if (nowNs > _lastNs)
        {
            _tokens = Math.Min(Burst, _tokens + ((nowNs - _lastNs) * RatePerSecond / 1e9));
            _lastNs = nowNs;
        }
    }
}
