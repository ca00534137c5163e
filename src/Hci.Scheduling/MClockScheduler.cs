namespace Hci.Scheduling;

/// <summary>
/// mClock (Gulati, Merchant and Varman, OSDI 2010): every tenant gets its reservation first (constraint-based
/// phase, smallest reservation tag due), then what is left is shared in proportion to the weights among
/// tenants under their limit (weight-based phase, smallest proportional tag). Tags are set when an I/O
/// reaches the head of its tenant's queue, and an I/O's cost grows with its size.
/// </summary>
/// <typeparam name="T">The caller's handle for an I/O.</typeparam>
public sealed class MClockScheduler<T> : IoScheduler<T>
    where T : class
{
    private readonly MClockSchedulerOptions _options;
    private readonly TenantTable<Tenant> _tenants;
    private readonly PriorityQueue<HeapEntry, double> _rHeap = new();
    private readonly PriorityQueue<HeapEntry, double> _pHeap = new();
    private readonly PriorityQueue<HeapEntry, double> _lHeap = new();
    private double _virtualP;
    private int _count;

    /// <summary>Creates the scheduler.</summary>
    /// <param name="options">Shares; validated here.</param>
    public MClockScheduler(MClockSchedulerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _options = options;
        _tenants = new TenantTable<Tenant>(id => new Tenant(options.Tenants.TryGetValue(id, out var s) ? s : options.Default));
    }

    /// <inheritdoc/>
    public override string Name => "mclock";

    /// <summary>I/Os dispatched in the constraint-based (reservation) phase so far.</summary>
    public long ReservationDispatches { get; private set; }

    /// <inheritdoc/>
    public override int Count => _count;

    /// <inheritdoc/>
    public override void Enqueue(T item, in IoDescriptor io)
    {
        var t = _tenants.Get(io.Tenant);
        t.Queue.Enqueue((item, io));
        _count++;
        if (t.Queue.Count == 1)
        {
            TagHead(t);
        }
    }

    /// <inheritdoc/>
    public override bool TryDequeue(long nowNs, out T item, out IoDescriptor io)
    {
        double now = nowNs / 1e9;

        // Tenants whose limit tag has come due may compete on weight again.
        while (_lHeap.TryPeek(out var le, out double lTag) && lTag <= now)
        {
            _lHeap.Dequeue();
            if (le.Version == le.Tenant.Version)
            {
                _pHeap.Enqueue(le, le.Tenant.HeadP);
            }
        }

        // Constraint-based phase: the most overdue reservation.
        Tenant? best = null;
        while (_rHeap.TryPeek(out var re, out double rTag))
        {
            if (re.Version != re.Tenant.Version)
            {
                _rHeap.Dequeue();
                continue;
            }

            if (rTag <= now)
            {
                best = re.Tenant;
            }

            break;
        }

        bool reservation = best != null;
        if (best == null)
        {
            // Weight-based phase: the smallest proportional tag among tenants under their limit.
            while (_pHeap.TryPeek(out var pe, out _))
            {
                if (pe.Version != pe.Tenant.Version)
                {
                    _pHeap.Dequeue();
                    continue;
                }

                if (pe.Tenant.HeadL > now)
                {
                    _pHeap.Dequeue();
                    _lHeap.Enqueue(pe, pe.Tenant.HeadL);
                    continue;
                }

                best = pe.Tenant;
                break;
            }
        }

        if (best == null)
        {
            item = null!;
            io = default;
            return false;
        }

        var entry = best.Queue.Dequeue();
        _count--;
        if (reservation)
        {
            best.LastR = best.HeadR;
            ReservationDispatches++;
        }
        else
        {
            _virtualP = Math.Max(_virtualP, best.HeadP - best.HeadCostOverWeight);
        }

        // A weight-based dispatch leaves the reservation tag where it was, so it does not count against the reservation.
        best.LastL = best.HeadL;
        best.LastP = best.HeadP;
        best.Version++;
        if (best.Queue.Count > 0)
        {
            TagHead(best);
        }

        item = entry.Item;
        io = entry.Io;
        return true;
    }

    /// <inheritdoc/>
    public override long NextEligibleNs(long nowNs)
    {
        if (_count == 0)
        {
            return long.MaxValue;
        }

        double next = double.MaxValue;
        while (_pHeap.TryPeek(out var pe, out _))
        {
            if (pe.Version != pe.Tenant.Version)
            {
                _pHeap.Dequeue();
                continue;
            }

            return nowNs; // a tenant may compete on weight now (or is moved to wait for its limit on the next try)
        }

        while (_rHeap.TryPeek(out var re, out double rTag))
        {
            if (re.Version != re.Tenant.Version)
            {
                _rHeap.Dequeue();
                continue;
            }

            next = Math.Min(next, rTag);
            break;
        }

        while (_lHeap.TryPeek(out var le, out double lTag))
        {
            if (le.Version != le.Tenant.Version)
            {
                _lHeap.Dequeue();
                continue;
            }

            next = Math.Min(next, lTag);
            break;
        }

        return next == double.MaxValue ? long.MaxValue : Math.Max(nowNs, (long)Math.Ceiling(next * 1e9));
    }

    /// <inheritdoc/>
    public override bool IsThrottled(int tenant, long nowNs)
        => _tenants.TryGet(tenant, out var t) && t.Queue.Count > 0 && t.HeadL > nowNs / 1e9 && t.HeadR > nowNs / 1e9;

    private void TagHead(Tenant t)
    {
        var io = t.Queue.Peek().Io;
        double cost = io.Length <= _options.CostIoSize ? 1 : (double)io.Length / _options.CostIoSize;

        // Tags follow the I/O's own arrival, so a backlogged tenant that fell behind its reservation catches up.
        double arrival = io.EnqueuedNs / 1e9;
        t.HeadR = t.Share.Reservation > 0 ? Math.Max(t.LastR + (cost / t.Share.Reservation), arrival) : double.MaxValue;
        t.HeadL = t.Share.Limit > 0 ? Math.Max(t.LastL + (cost / t.Share.Limit), arrival) : double.MinValue;

        // Proportional tags start at the virtual time (the start tag of the last weight-based dispatch), so a
        // tenant that was idle neither banks credit nor is pushed behind: start-time fair queueing.
        t.HeadCostOverWeight = cost / t.Share.Weight;
        t.HeadP = Math.Max(t.LastP, _virtualP) + t.HeadCostOverWeight;
        t.Version++;
        var entry = new HeapEntry(t, t.Version);
        if (t.Share.Reservation > 0)
        {
            _rHeap.Enqueue(entry, t.HeadR);
        }

        _pHeap.Enqueue(entry, t.HeadP);
    }

    private readonly record struct HeapEntry(Tenant Tenant, int Version);

    private sealed class Tenant(MClockTenant share)
    {
        public MClockTenant Share { get; } = share;

        public Queue<(T Item, IoDescriptor Io)> Queue { get; } = new(64);

        public double LastR;
        public double LastL;
        public double LastP;
        public double HeadR;
        public double HeadL;
        public double HeadP;
        public double HeadCostOverWeight;
        public int Version;
    }
}
