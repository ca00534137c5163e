namespace Hci.Scheduling;

/// <summary>
/// IOPS and bandwidth limits per tenant with bursts (token buckets), I/O size normalized; tenants with I/O
/// waiting are served round-robin. As QEMU throttle groups and SPDK QoS do.
/// </summary>
/// <typeparam name="T">The caller's handle for an I/O.</typeparam>
public sealed class LimitsScheduler<T> : IoScheduler<T>
    where T : class
{
    private readonly LimitsSchedulerOptions _options;
    private readonly TenantTable<Tenant> _tenants;
    private int _count;
    private int _cursor;

    /// <summary>Creates the scheduler.</summary>
    /// <param name="options">Limits; validated here.</param>
    public LimitsScheduler(LimitsSchedulerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _options = options;
        _tenants = new TenantTable<Tenant>(id => new Tenant(options.Tenants.TryGetValue(id, out var l) ? l : options.Default));
    }

    /// <inheritdoc/>
    public override string Name => "limits";

    /// <inheritdoc/>
    public override int Count => _count;

    /// <inheritdoc/>
    public override void Enqueue(T item, in IoDescriptor io)
    {
        _tenants.Get(io.Tenant).Queue.Enqueue((item, io));
        _count++;
    }

    /// <inheritdoc/>
    public override bool TryDequeue(long nowNs, out T item, out IoDescriptor io)
    {
        int n = _tenants.Count;
        for (int i = 0; i < n; i++)
        {
            int slot = (_cursor + i) % n;
            var t = _tenants[slot];
            if (t.Queue.Count == 0)
            {
                continue;
            }

            var head = t.Queue.Peek();
            double cost = Cost(head.Io);
            if (t.Iops.CanSpend(cost, nowNs) && t.Bytes.CanSpend(head.Io.Length, nowNs))
            {
                t.Iops.Spend(cost, nowNs);
                t.Bytes.Spend(head.Io.Length, nowNs);
                t.Queue.Dequeue();
                _count--;
                _cursor = (slot + 1) % n;
                item = head.Item;
                io = head.Io;
                return true;
            }
        }

        item = null!;
        io = default;
        return false;
    }

    /// <inheritdoc/>
    public override long NextEligibleNs(long nowNs)
    {
        long next = long.MaxValue;
        for (int i = 0; i < _tenants.Count; i++)
        {
            var t = _tenants[i];
            if (t.Queue.Count == 0)
            {
                continue;
            }

            var head = t.Queue.Peek().Io;
            next = Math.Min(next, Math.Max(t.Iops.ReadyAt(Cost(head), nowNs), t.Bytes.ReadyAt(head.Length, nowNs)));
        }

        return next;
    }

    /// <inheritdoc/>
    public override bool IsThrottled(int tenant, long nowNs)
    {
        if (!_tenants.TryGet(tenant, out var t) || t.Queue.Count == 0)
        {
            return false;
        }

        var head = t.Queue.Peek().Io;
        return !t.Iops.CanSpend(Cost(head), nowNs) || !t.Bytes.CanSpend(head.Length, nowNs);
    }

    private double Cost(in IoDescriptor io)
        => _options.NormalizedIoSize == 0 || io.Length <= _options.NormalizedIoSize ? 1 : (double)io.Length / _options.NormalizedIoSize;

    private sealed class Tenant
    {
        public Tenant(TenantLimits limits)
        {
            Iops = new TokenBucket(limits.Iops, limits.IopsBurst > 0 ? limits.IopsBurst : Math.Max(1, limits.Iops / 10));
            Bytes = new TokenBucket(limits.BytesPerSecond, limits.BytesBurst > 0 ? limits.BytesBurst : Math.Max(1, limits.BytesPerSecond / 10));
        }

        public Queue<(T Item, IoDescriptor Io)> Queue { get; } = new(64);

        public TokenBucket Iops;

        public TokenBucket Bytes;
    }
}
