using Hci.Core.Blocks;

namespace Hci.Scheduling;

/// <summary>
/// The scheduler the paper proposes for a node shared by VMs and containers: not fair, but best for the node.
/// Container I/O (no I/O virtualization, far faster) is served first; while containers press, VM tenants are
/// throttled to a small share that adapts to the device's rate and the number of busy VMs, and their waiting
/// I/O is released in batches. A VM never starves (a floor rate per VM and a bound on the delay added to any
/// I/O), and when containers are idle VMs run as under FIFO. Background work gets what is left, above a floor.
/// While containers press, VMs may also use the device slots the containers leave idle, as many at once as the
/// containers' latency allows: a window that grows while the containers' latency stays within
/// <see cref="HybridSchedulerOptions.ContainerLatencyTolerance"/> of its level with the window shut (the median of
/// the last five measurements, taken again every half second) and halves when it does not; when even one VM I/O at
/// a time costs the containers more than that, the window stays shut for twice as long each time (up to 64
/// windows), so that VMs get a fraction of a slot. On a device with idle channels that is nearly all the device
/// the containers leave; on one where every VM I/O slows the containers it is little beyond the VMs' share.
/// </summary>
/// <typeparam name="T">The caller's handle for an I/O.</typeparam>
public sealed class HybridScheduler<T> : IoScheduler<T>
    where T : class
{
    private readonly HybridSchedulerOptions _options;
    private readonly long _maxDelayNs;
    private readonly long _holdNs;
    private readonly TenantTable<VmTenant> _vms;
    private readonly Queue<(T Item, IoDescriptor Io)> _containers = new(256);
    private readonly Queue<(T Item, IoDescriptor Io)> _background = new(64);
    private TokenBucket _backgroundFloor;
    private int _containerOutstanding;
    private int _vmWaiting;
    private int _busyVms;
    private int _cursor;
    private long _pressedUntilNs = long.MinValue;
    private double _containerLatencyNs;
    private double _deviceRate;
    private long _rateWindowStartNs = long.MinValue;
    private long _rateWindowCompletions;
    private long _earliestOverdueNs = long.MaxValue;
    private long _nextVmReadyNs;
    private VmTenant? _batchVm;
    private int _rateBusyVms = -1;
    private double _rateDevice = -1;

    // The slack window: VM I/Os allowed at the device on slots the containers leave idle, steered by the containers'
    // latency in windows of at least SlackWindowCompletions completions and SlackWindowNs.
    private const int SlackWindowCompletions = 256;
    private const long SlackWindowNs = 4_000_000;
    private const int SlackWindowFewCompletions = 32;
    private const long SlackWindowLongNs = 50_000_000;
    private const long BaselineEveryNs = 500_000_000;
    private const int MaxSlack = 4096;
    private const int MaxShutWindows = 64;
    private readonly double _tolerance;
    private int _vmAtDevice;
    private int _slack;
    private int _slackPeak;
    private long _slackWindowStartNs = long.MinValue;
    private long _lastSlackWindowNs;
    private long _lastContainerDoneNs = long.MinValue;
    private double _slackWindowSumNs;
    private int _slackWindowCount;
    private double _baselineNs;
    private long _baselineAtNs;
    private int _shutLeft = 2; // shut at first: one window to settle, one to measure the containers' level
    private int _shutWindows = 2;
    private readonly double[] _levels = new double[5];
    private int _levelNext;
    private int _levelCount;
    private int _shutFor = 1;
    private int _slackBeforeShut;

    /// <summary>Creates the scheduler.</summary>
    /// <param name="options">Options; validated here.</param>
    public HybridScheduler(HybridSchedulerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _options = options;
        _maxDelayNs = (long)options.MaxAddedDelay.TotalNanoseconds;
        _holdNs = (long)options.PressureHold.TotalNanoseconds;
        _vms = new TenantTable<VmTenant>(tenant => new VmTenant(tenant, options.VmFloorIops, options.VmBatchSize));
        _backgroundFloor = new TokenBucket(options.BackgroundFloorIops, 1);
        _tolerance = options.ContainerLatencyTolerance;
    }

    /// <inheritdoc/>
    public override string Name => "hybrid";

    /// <inheritdoc/>
    public override int Count => _containers.Count + _vmWaiting + _background.Count;

    /// <summary>The device's completion rate as last measured, in I/Os per second.</summary>
    public double MeasuredDeviceRate => _deviceRate;

    /// <summary>VM I/Os the scheduler now lets reach the device on slots containers leave idle while they press (0: none).</summary>
    public int VmSlackWindow => _slack;

    /// <summary>True when containers press at <paramref name="nowNs"/>, so VMs are throttled.</summary>
    /// <param name="nowNs">The current time.</param>
    /// <returns>Whether containers press.</returns>
    public bool ContainersPressing(long nowNs)
    {
        bool pressing = _containerOutstanding >= _options.ContainerPressureDepth
            || (_options.ContainerLatencyThreshold > TimeSpan.Zero && _containerOutstanding > 0 && _containerLatencyNs > _options.ContainerLatencyThreshold.TotalNanoseconds);
        if (pressing)
        {
            _pressedUntilNs = nowNs + _holdNs;
            return true;
        }

        return nowNs < _pressedUntilNs;
    }

    /// <inheritdoc/>
    public override void Enqueue(T item, in IoDescriptor io)
    {
        switch (io.Class)
        {
            case IoClass.Container:
                if (_containerOutstanding == 0 && _lastContainerDoneNs != long.MinValue && io.EnqueuedNs - _lastContainerDoneNs > BaselineEveryNs)
                {
                    ContainersBackAfterQuiet();
                }

                _containers.Enqueue((item, io));
                _containerOutstanding++;
                break;
            case IoClass.Background:
                _background.Enqueue((item, io));
                break;
            default:
                var vm = _vms.Get(io.Tenant);
                if (vm.Queue.Count == 0)
                {
                    _busyVms++;
                    _nextVmReadyNs = 0; // a newly busy VM may be ready at once
                }

                vm.Queue.Enqueue((item, io));
                _vmWaiting++;
                _earliestOverdueNs = Math.Min(_earliestOverdueNs, vm.Queue.Peek().Io.EnqueuedNs + _maxDelayNs);
                break;
        }
    }

    /// <inheritdoc/>
    public override bool TryDequeue(long nowNs, out T item, out IoDescriptor io)
    {
        // 1. A VM I/O at its delay bound goes first: the bound is a promise.
        var overdue = FindOverdueVm(nowNs);
        if (overdue != null)
        {
            return TakeVm(overdue, nowNs, out item, out io);
        }

        // 2. Background work at its floor rate, so rebuilds finish even on a busy node.
        if (_background.Count > 0 && _options.BackgroundFloorIops > 0 && _backgroundFloor.CanSpend(1, nowNs))
        {
            _backgroundFloor.Spend(1, nowNs);
            return Take(_background, out item, out io);
        }

        // 3. While containers press, each VM's throttled share goes when its tokens allow, a batch at a time;
        //    it goes ahead of containers, or a saturating container load would leave VMs only their delay bound.
        bool pressing = ContainersPressing(nowNs);
        if (pressing && _vmWaiting > 0)
        {
            UpdateVmRates();
            if (_batchVm != null && _batchVm.BatchLeft > 0 && _batchVm.Queue.Count > 0)
            {
                return TakeVm(_batchVm, nowNs, out item, out io);
            }

            // Scan only when some VM may have tokens for a batch: the scan records when the next one will.
            if (nowNs >= _nextVmReadyNs)
            {
                long nextReady = long.MaxValue;
                int n = _vms.Count;
                for (int i = 0; i < n; i++)
                {
                    var vm = _vms[(_cursor + i) % n];
                    if (vm.Queue.Count == 0)
                    {
                        continue;
                    }

                    int want = Math.Min(vm.Queue.Count, _options.VmBatchSize);
                    if (vm.Bucket.CanSpend(want, nowNs))
                    {
                        vm.BatchLeft = want;
                        vm.Bucket.Spend(want, nowNs);
                        vm.Batches++;
                        if (SchedulingMetrics.Batches.Enabled)
                        {
                            SchedulingMetrics.RecordBatch(IoClass.Vm, vm.Tenant);
                        }

                        _batchVm = vm;
                        _cursor = (_cursor + i + 1) % n;
                        _nextVmReadyNs = 0;
                        return TakeVm(vm, nowNs, out item, out io);
                    }

                    nextReady = Math.Min(nextReady, vm.Bucket.ReadyAt(want, nowNs));
                }

                _nextVmReadyNs = nextReady;
            }
        }

        // 4. Containers.
        if (_containers.Count > 0)
        {
            return Take(_containers, out item, out io);
        }

        // 4b. While containers press, VMs use the slots they leave idle, as many at once as the slack window allows.
        if (pressing && _vmWaiting > 0 && _vmAtDevice < _slack)
        {
            return TakeVm(NextBusyVm(), nowNs, out item, out io);
        }

        // 5. VMs at full speed when containers are quiet: work-conserving.
        if (!pressing && _vmWaiting > 0)
        {
            return TakeVm(NextBusyVm(), nowNs, out item, out io);
        }

        // 6. Background work takes what is left.
        if (_background.Count > 0 && !pressing && _vmWaiting == 0)
        {
            return Take(_background, out item, out io);
        }

        item = null!;
        io = default;
        return false;
    }

    /// <inheritdoc/>
    public override long NextEligibleNs(long nowNs)
    {
        if (_containers.Count > 0)
        {
            return nowNs;
        }

        // (VM batches that are due are found below.)

        long next = long.MaxValue;
        if (_background.Count > 0)
        {
            next = _options.BackgroundFloorIops > 0 ? _backgroundFloor.ReadyAt(1, nowNs) : next;
            if (!ContainersPressing(nowNs) && _vmWaiting == 0)
            {
                return nowNs;
            }
        }

        if (_vmWaiting > 0)
        {
            if (!ContainersPressing(nowNs) || _vmAtDevice < _slack)
            {
                return nowNs;
            }

            for (int i = 0; i < _vms.Count; i++)
            {
                var vm = _vms[i];
                if (vm.Queue.Count == 0)
                {
                    continue;
                }

                long due = vm.Queue.Peek().Io.EnqueuedNs + _maxDelayNs;
                long ready = vm.BatchLeft > 0 ? nowNs : vm.Bucket.ReadyAt(Math.Min(vm.Queue.Count, _options.VmBatchSize), nowNs);
                next = Math.Min(next, Math.Min(due, ready));
            }

            // Pressure may end before then, and VMs would run at once.
            next = Math.Min(next, Math.Max(nowNs, _pressedUntilNs));
        }

        return next;
    }

    /// <inheritdoc/>
    public override void OnCompleted(in IoDescriptor io, long nowNs)
    {
        if (io.Class == IoClass.Container)
        {
            _containerOutstanding--;
            double latency = nowNs - io.EnqueuedNs;
            _containerLatencyNs = _containerLatencyNs == 0 ? latency : (_containerLatencyNs * 0.95) + (latency * 0.05);
            _lastContainerDoneNs = nowNs;
            CountForSlack(latency, nowNs);
        }
        else if (io.Class != IoClass.Background && _vmAtDevice > 0)
        {
            _vmAtDevice--;
        }

        // The device's rate over windows of 10 ms, smoothed: the base of the VMs' share.
        if (_rateWindowStartNs == long.MinValue)
        {
            _rateWindowStartNs = nowNs;
        }

        _rateWindowCompletions++;
        long elapsed = nowNs - _rateWindowStartNs;
        if (elapsed >= 10_000_000)
        {
            double rate = _rateWindowCompletions * 1e9 / elapsed;
            _deviceRate = _deviceRate == 0 ? rate : (_deviceRate * 0.7) + (rate * 0.3);
            _rateWindowStartNs = nowNs;
            _rateWindowCompletions = 0;
        }
    }

    /// <inheritdoc/>
    public override bool IsThrottled(int tenant, long nowNs)
    {
        if (!ContainersPressing(nowNs) || _vmAtDevice < _slack || !_vms.TryGet(tenant, out var vm))
        {
            return false;
        }

        return vm.BatchLeft == 0 && !vm.Bucket.CanSpend(Math.Min(Math.Max(1, vm.Queue.Count), _options.VmBatchSize), nowNs);
    }

    /// <summary>Batches released to <paramref name="tenant"/> while throttled (each a single release of up to <see cref="HybridSchedulerOptions.VmBatchSize"/> I/Os).</summary>
    /// <param name="tenant">A VM tenant.</param>
    /// <returns>The count.</returns>
    public long BatchesReleased(int tenant) => _vms.TryGet(tenant, out var vm) ? vm.Batches : 0;

    private void CountForSlack(double latencyNs, long nowNs)
    {
        if (_tolerance <= 0)
        {
            return;
        }

        if (_slackWindowStartNs == long.MinValue)
        {
            _slackWindowStartNs = nowNs;
        }

        _slackWindowSumNs += latencyNs;
        long elapsed = nowNs - _slackWindowStartNs;
        ++_slackWindowCount;
        bool closes = (_slackWindowCount >= SlackWindowCompletions && elapsed >= SlackWindowNs)
            || (_slackWindowCount >= SlackWindowFewCompletions && elapsed >= SlackWindowLongNs); // light containers
        if (!closes)
        {
            return;
        }

        double mean = _slackWindowSumNs / _slackWindowCount;
        _lastSlackWindowNs = elapsed;
        _slackWindowStartNs = nowNs;
        _slackWindowSumNs = 0;
        _slackWindowCount = 0;
        if (_shutLeft > 0)
        {
            MeasureLevel(mean, nowNs);
        }
        else
        {
            Steer(mean, nowNs);
        }

        _slackPeak = _vmAtDevice;
    }

    // A window while shut: the first lets VM I/O already at the device finish, each later one measures the level.
    private void MeasureLevel(double mean, long nowNs)
    {
        // The level is the median of the last few such measurements, so that one stalled or lucky window
        // (a preempted thread, a device hiccup) neither opens the VMs' way wide nor shuts it for long.
        bool draining = _shutLeft == _shutWindows;
        if (!draining)
        {
            _levels[_levelNext] = mean;
            _levelNext = (_levelNext + 1) % _levels.Length;
            _levelCount = Math.Min(_levelCount + 1, _levels.Length);
            _baselineNs = Median(_levels.AsSpan(0, _levelCount));
            _baselineAtNs = nowNs;
        }

        if (--_shutLeft == 0)
        {
            _slack = Math.Max(1, _slackBeforeShut);
        }
    }

    // A window while open: narrow it if the containers felt the VMs, widen it if they did not and VMs filled it.
    private void Steer(double mean, long nowNs)
    {
        // With the window open the containers' latency can only be at or above their level: a level above this
        // window's mean was measured in a bad moment, so it gives way to the mean until the next measurement.
        _baselineNs = Math.Min(_baselineNs, mean);
        if (mean > _baselineNs * (1 + _tolerance))
        {
            if (_slack <= 1)
            {
                // Even one VM I/O at a time costs the containers too much: stay shut longer each time it does
                // (a fraction of a slot, in time), up to MaxShutWindows.
                _shutFor = _slack == 1 ? Math.Min(_shutFor * 2, MaxShutWindows) : _shutFor;
                Shut(_shutFor, 0);
            }
            else
            {
                _slack /= 2;
            }
        }
        else
        {
            if (_slack == 1)
            {
                _shutFor = 1;
            }

            if (_slackPeak >= _slack && mean <= _baselineNs * (1 + (_tolerance / 2)))
            {
                _slack = Math.Min(MaxSlack, _slack + Math.Max(1, _slack / 4)); // grow only a window VMs filled
            }

            if (nowNs - _baselineAtNs >= Math.Max(BaselineEveryNs, 16 * _lastSlackWindowNs))
            {
                Shut(1, _slack); // the containers' own level moves with their depth and the device: measure it again
            }
        }
    }

    private void ContainersBackAfterQuiet()
    {
        // Containers were quiet for longer than the level is trusted: what the window and the level say is stale, so
        // start from half the window, behind a fresh measurement, rather than let VMs fill the old window at once.
        _slackWindowStartNs = long.MinValue;
        _slackWindowSumNs = 0;
        _slackWindowCount = 0;
        if (_tolerance > 0 && _shutLeft == 0)
        {
            Shut(1, Math.Max(1, _slack / 2));
        }
    }

    private void Shut(int windows, int reopenAt)
    {
        _slackBeforeShut = reopenAt;
        _slack = 0;
        _shutLeft = _shutWindows = windows + 1;
    }

    private static double Median(ReadOnlySpan<double> values)
    {
        Span<double> sorted = stackalloc double[values.Length];
        values.CopyTo(sorted);
        sorted.Sort();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[(sorted.Length / 2) - 1] + sorted[sorted.Length / 2]) / 2;
    }

    private void UpdateVmRates()
    {
        if (_busyVms == _rateBusyVms && _deviceRate == _rateDevice)
        {
            return;
        }

        _rateBusyVms = _busyVms;
        _rateDevice = _deviceRate;
        _nextVmReadyNs = 0;
        double share = _deviceRate * _options.VmShareWhenPressed / Math.Max(1, _busyVms);
        double rate = Math.Max(_options.VmFloorIops, share);
        for (int i = 0; i < _vms.Count; i++)
        {
            _vms[i].Bucket.RatePerSecond = rate;
        }
    }

    private VmTenant? FindOverdueVm(long nowNs)
    {
        // Nothing can be overdue before the earliest due time seen (a lower bound: heads only get younger).
        if (_vmWaiting == 0 || nowNs < _earliestOverdueNs)
        {
            return null;
        }

        VmTenant? oldest = null;
        long oldestAt = long.MaxValue;
        for (int i = 0; i < _vms.Count; i++)
        {
            var vm = _vms[i];
            if (vm.Queue.Count > 0)
            {
                long at = vm.Queue.Peek().Io.EnqueuedNs;
                if (at < oldestAt)
                {
                    oldest = vm;
                    oldestAt = at;
                }
            }
        }

        _earliestOverdueNs = oldest == null ? long.MaxValue : oldestAt + _maxDelayNs;
        return oldest != null && nowNs - oldestAt >= _maxDelayNs ? oldest : null;
    }

    private VmTenant NextBusyVm()
    {
        int n = _vms.Count;
        for (int i = 0; i < n; i++)
        {
            int slot = (_cursor + i) % n;
            if (_vms[slot].Queue.Count > 0)
            {
                _cursor = (slot + 1) % n;
                return _vms[slot];
            }
        }

        throw new InvalidOperationException("No VM I/O waits.");
    }

    private bool TakeVm(VmTenant vm, long nowNs, out T item, out IoDescriptor io)
    {
        var entry = vm.Queue.Dequeue();
        _vmWaiting--;
        if (++_vmAtDevice > _slackPeak)
        {
            _slackPeak = _vmAtDevice;
        }

        if (vm.Queue.Count == 0)
        {
            _busyVms--;
            vm.BatchLeft = 0;
        }
        else if (vm.BatchLeft > 0)
        {
            vm.BatchLeft--;
        }
        else
        {
            // Taken outside a batch (overdue, an idle slot, or unthrottled): the VM now needs fewer tokens for its
            // next batch than when the scan noted when one would be ready. Note the earlier time, as NextEligibleNs
            // counts it ("now" with nothing given would be a busy loop), without a scan of every VM per I/O. A VM left
            // with nothing queued has no next batch (its next I/O resets the gate), and noting "now" for it would
            // bring the scan back on every I/O of a VM at depth 1.
            if (vm.Queue.Count > 0)
            {
                _nextVmReadyNs = Math.Min(_nextVmReadyNs, vm.Bucket.ReadyAt(Math.Min(vm.Queue.Count, _options.VmBatchSize), nowNs));
            }
        }

        item = entry.Item;
        io = entry.Io;
        return true;
    }

    private static bool Take(Queue<(T Item, IoDescriptor Io)> queue, out T item, out IoDescriptor io)
    {
        var entry = queue.Dequeue();
        item = entry.Item;
        io = entry.Io;
        return true;
    }

    private sealed class VmTenant(int tenant, double floor, int batch)
    {
        public int Tenant { get; } = tenant;

        public Queue<(T Item, IoDescriptor Io)> Queue { get; } = new(128);

        public TokenBucket Bucket = new(floor, Math.Max(batch, 1));

        public int BatchLeft;

        public long Batches;
    }
}
