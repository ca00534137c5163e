using System.Diagnostics;
using Hci.Core.Blocks;
using Hci.Core.Devices.Decorators;
using Hci.Core.Modules;

namespace Hci.Scheduling;

/// <summary>
/// A device whose queues pass every request through a scheduler before the inner device: each queue runs its
/// own scheduler instance on its owner thread (no locks), keeps at most its depth of requests at the device,
/// and exposes the scheduler's "throttled now" signal to the front-end. Without a scheduler configured, use the
/// inner device directly: the decorator is the only cost.
/// </summary>
public sealed class ScheduledBlockDevice : BlockDeviceDecorator
{
    private readonly SchedulerOptions _options;

    /// <summary>Wraps <paramref name="inner"/>.</summary>
    /// <param name="inner">The device that carries the I/O.</param>
    /// <param name="options">Which scheduler; validated here.</param>
    /// <param name="ownsInner">Dispose the inner device with this one.</param>
    public ScheduledBlockDevice(BlockDevice inner, SchedulerOptions options, bool ownsInner = true)
        : base(inner, ownsInner)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _options = options;
    }

    /// <summary>Wraps <paramref name="inner"/> with options from dependency injection (bound from configuration).</summary>
    /// <param name="inner">The device that carries the I/O.</param>
    /// <param name="options">Which scheduler; validated here, so a bad configuration stops the host at start-up.</param>
    /// <param name="ownsInner">Dispose the inner device with this one.</param>
    public ScheduledBlockDevice(BlockDevice inner, Microsoft.Extensions.Options.IOptions<SchedulerOptions> options, bool ownsInner = true)
        : this(inner, (options ?? throw new ArgumentNullException(nameof(options))).Value, ownsInner)
    {
    }

    /// <summary>The scheduler settings.</summary>
    public SchedulerOptions Options => _options;

    /// <inheritdoc/>
    protected override BlockQueue CreateQueueCore(int depth) => new ScheduledBlockQueue(this, _options.Create<BlockRequest>(), depth);
}

/// <summary>A queue of <see cref="ScheduledBlockDevice"/>: requests wait in its scheduler until it lets them go.</summary>
internal sealed class ScheduledBlockQueue : DecoratorQueue
{
    private static readonly double s_nsPerTick = 1e9 / Stopwatch.Frequency;
    private readonly IoScheduler<BlockRequest> _scheduler;
    private readonly int _maxAtDevice;
    private readonly long _startTicks = Stopwatch.GetTimestamp();
    private readonly bool _coalesce;
    private readonly BlockRequest[] _run;
    private int _runCount;
    private long _runEnd;
    private int _runSegments;
    private int _atDevice;

    internal ScheduledBlockQueue(ScheduledBlockDevice device, IoScheduler<BlockRequest> scheduler, int depth)
        : base(device, device.Inner, depth)
    {
        _scheduler = scheduler;
        // Never more at the device than it takes at once: past its tags the kernel queues in its own order (and
        // io_uring parks each extra request on a worker thread, CPU the reactor and the device need), so VM I/O
        // released on top of a container's full depth would take the container's speed, not just its slots.
        int tags = device.Geometry.DeviceQueueDepth;
        _maxAtDevice = tags > 0 ? Math.Min(depth, tags) : depth;
        _coalesce = device.Options.Kind == SchedulerKind.Hybrid && device.Options.Hybrid.CoalesceVmIo;
        _run = new BlockRequest[Math.Min(depth, device.Geometry.MaxSegments)];
    }

    /// <summary>The scheduler this queue runs.</summary>
    public IoScheduler<BlockRequest> Scheduler => _scheduler;

    /// <summary>VM requests merged into a neighbour before the device so far.</summary>
    public long Coalesced { get; private set; }

    /// <summary>Most requests this queue keeps at the device at once: its depth, or the device's own queue depth if less.</summary>
    public int MaxAtDevice => _maxAtDevice;

    /// <summary>Requests waiting in the scheduler.</summary>
    public int Waiting => _scheduler.Count;

    /// <summary>The scheduler clock: nanoseconds since the queue was made.</summary>
    public long NowNs => TestNowNs ?? (long)((Stopwatch.GetTimestamp() - _startTicks) * s_nsPerTick);

    /// <summary>When set, the queue's time stands at this value (tests only: no timing dependency on the test's own speed).</summary>
    internal long? TestNowNs { get; set; }

    /// <summary>True when the scheduler is holding <paramref name="tenant"/>'s I/O back now; a front-end may then leave that tenant's work at the edge.</summary>
    /// <param name="tenant">The tenant.</param>
    /// <returns>Whether it is throttled.</returns>
    public override bool IsThrottled(int tenant) => _scheduler.IsThrottled(tenant, NowNs);

    /// <inheritdoc/>
    protected override void SubmitCore(BlockRequest request)
    {
        long now = NowNs;

        // The low bit notes whether the tenant was throttled on arrival (for the throttled-time meter).
        bool throttled = (SchedulingMetrics.Enabled || request.IsTraced) && _scheduler.IsThrottled(request.Tenant, now);
        request.SchedulerTimestamp = (now & ~1L) | (throttled ? 1L : 0L);
        _scheduler.Enqueue(request, new IoDescriptor(request.Class, request.Tenant, request.Operation, request.Offset, request.Length, now));
        Pump(now);
    }

    /// <inheritdoc/>
    protected override int PollCore(int minCompletions, int timeoutMilliseconds)
    {
        int before = InFlight;
        long deadline = timeoutMilliseconds < 0 ? long.MaxValue : NowNs + (timeoutMilliseconds * 1_000_000L);
        while (true)
        {
            long now = NowNs;
            Pump(now);
            int done = before - InFlight;
            int wantMore = minCompletions - done;
            if (wantMore <= 0 || now >= deadline)
            {
                InnerQueue.Poll(0, 0);
                Pump(NowNs);
                return before - InFlight;
            }

            // Wait for the device, or for the scheduler's next release, whichever comes first.
            long until = deadline;
            if (_scheduler.Count > 0 && _atDevice < _maxAtDevice)
            {
                until = Math.Min(until, _scheduler.NextEligibleNs(now));
            }

            if (_atDevice == 0 && until == long.MaxValue)
            {
                return before - InFlight; // nothing at the device, nothing the scheduler will release: do not wait forever
            }

            int waitMs = until == long.MaxValue ? Timeout.Infinite : (int)Math.Clamp((until - now + 999_999) / 1_000_000, 0, int.MaxValue);
            int arrived = InnerQueue.Poll(_atDevice > 0 ? 1 : 0, waitMs);
            if (arrived == 0 && waitMs != 0 && NowNs < until)
            {
                return before - InFlight; // woken
            }
        }
    }

    /// <inheritdoc/>
    protected override void OnInnerRequestCompleted() => _atDevice--;

    /// <inheritdoc/>
    protected override void OnInnerCompleted(BlockRequest request, int result, BlockError error)
    {
        long now = NowNs;
        _scheduler.OnCompleted(new IoDescriptor(request.Class, request.Tenant, request.Operation, request.Offset, request.Length, request.SchedulerTimestamp & ~1L), now);
        Complete(request, result, error);
    }

    private void Pump(long now)
    {
        bool metrics = SchedulingMetrics.Enabled;
        // _atDevice counts device requests: a merged run is one, so coalescing lets more I/O through the same depth.
        while (_atDevice < _maxAtDevice && _scheduler.TryDequeue(now, out var request, out var io))
        {
            if (metrics)
            {
                long queued = now - io.EnqueuedNs;
                SchedulingMetrics.RecordDispatch(io.Class, io.Tenant, io.Length, queued);
                if ((request.SchedulerTimestamp & 1) != 0)
                {
                    // The tenant was throttled when this I/O arrived: its wait is throttled time.
                    SchedulingMetrics.RecordThrottled(io.Class, io.Tenant, queued);
                }
            }

            // A traced request's wait here: throttled when its tenant was on arrival, else its turn in the queue.
            request.MarkStage((request.SchedulerTimestamp & 1) != 0 ? RequestStage.Throttle : RequestStage.Scheduler);
            if (!_coalesce || request.Class != IoClass.Vm || request.Operation is not (BlockOperation.Read or BlockOperation.Write))
            {
                FlushRun();
                _atDevice++;
                Forward(request);
                continue;
            }

            // VM I/O released one after another: merge what follows on the device into one request.
            if (_runCount > 0 && !Extends(request))
            {
                FlushRun();
            }

            _run[_runCount++] = request;
            _runEnd = request.Offset + request.Length;
            _runSegments += request.SegmentCount;
            if (_runCount == _run.Length)
            {
                FlushRun();
            }
        }

        FlushRun();
    }

    private bool Extends(BlockRequest request)
    {
        var first = _run[0];
        var g = Device.Geometry;
        return request.Tenant == first.Tenant && request.Operation == first.Operation && request.Flags == first.Flags
            && request.Offset == _runEnd && _runEnd + request.Length - first.Offset <= g.MaxTransferBytes
            && _runSegments + request.SegmentCount <= g.MaxSegments;
    }

    private void FlushRun()
    {
        if (_runCount == 0)
        {
            return;
        }

        Coalesced += _runCount - 1;
        _atDevice++;
        ForwardMerged(_run.AsSpan(0, _runCount));
        Array.Clear(_run, 0, _runCount);
        _runCount = 0;
        _runSegments = 0;
    }
}
