using Hci.Core.Blocks;
using Hci.Core.Native;
using Hci.Core.Reactors;
using Hci.Transport.Virtio;
using Microsoft.Extensions.Logging;
using Tmds.Linux;

namespace Hci.Transport.Vhost;

/// <summary>
/// The virtqueues one data-plane <see cref="Reactor"/> serves, as one of its pollers, over one
/// <see cref="BlockQueue"/> on the device that the reactor owns (and sleeps on). Each turn takes every available
/// chain with kicks off (a guest that sees the back-end looking saves its notifications); before the reactor
/// sleeps, kicks are asked for again and the rings looked at once more, and a throttled tenant's rings cut the
/// sleep to 1 ms so their held requests are looked at again. Kick eventfds are watched only while the reactor
/// sleeps. Rings are added, changed and removed by messages from the control threads; a ring stops only once every
/// request it started has completed.
/// </summary>
/// <remarks>
/// An unexpected exception while handling one chain answers that chain VIRTIO_BLK_S_IOERR
/// (<see cref="VirtioBlkQueueProcessor.OnFault"/>). One that escapes a ring's processing otherwise fails that ring
/// only: it takes no more chains, stops where it had read to once its requests complete (what GET_VRING_BASE then
/// reports), and the reactor goes on serving the others.
/// </remarks>
internal sealed unsafe class RingPoller : IPoller
{
    private static readonly TimeSpan ControlTimeout = TimeSpan.FromSeconds(30);

    private readonly Reactor _reactor;
    private readonly BlockDevice _device;
    private readonly int _depth;
    private readonly ILogger _logger;
    private readonly List<ReactorRing> _rings = [];
    private BlockQueue? _queue;
    private IDisposable? _registration;
    private long _kicks;

    public RingPoller(Reactor reactor, BlockDevice device, int depth, ILogger logger)
    {
        _reactor = reactor;
        _device = device;
        _depth = depth;
        _logger = logger;
    }

    /// <summary>The reactor.</summary>
    public Reactor Reactor => _reactor;

    /// <summary>Kicks read so far.</summary>
    public long Kicks => Interlocked.Read(ref _kicks);

    /// <summary>Opens the reactor's queue on the device and starts polling.</summary>
    /// <exception cref="IOException">The device refused the queue.</exception>
    public void Start()
    {
        try
        {
            Invoke(() =>
            {
                // A ring is drained in batches and polled right after: one io_uring_enter per batch, not per
                // request (file randread QD32 through the client: about 1.6x the IOPS of submitting each at once).
                _queue = _reactor.AcquireQueue(_device, _depth);
                _queue.BatchSubmissions = true;
                _registration = _reactor.AddPoller(this);
            });
        }
        catch (InvalidOperationException e)
        {
            throw new IOException($"The reactor {_reactor.Name} could not open a queue on '{_device.Name}': {e.InnerException?.Message ?? e.Message}", e.InnerException ?? e);
        }
    }

    /// <summary>Stops polling and gives the queue back; every ring must have been removed.</summary>
    public void Stop()
    {
        if (_reactor.IsStopped)
        {
            return;
        }

        Invoke(() =>
        {
            _registration?.Dispose();
            _registration = null;
            if (_queue != null)
            {
                _reactor.ReleaseQueue(_queue);
                _queue = null;
            }
        });
    }

    /// <summary>Runs <paramref name="command"/> on the reactor and waits for it (control threads only), for a bounded time.</summary>
    /// <param name="command">The command.</param>
    /// <exception cref="InvalidOperationException">It failed, the reactor stopped, or it did not run in time.</exception>
    public void Invoke(Action command)
    {
        var task = _reactor.InvokeAsync(command);
        try
        {
            if (!task.Wait(ControlTimeout))
            {
                throw new InvalidOperationException($"The vhost-user reactor {_reactor.Name} did not run a command within {ControlTimeout.TotalSeconds:F0} s.");
            }
        }
        catch (AggregateException e)
        {
            var inner = e.InnerException ?? e;
            throw new InvalidOperationException(inner.Message, inner);
        }
    }

    /// <summary>Starts serving a ring.</summary>
    /// <param name="ring">The ring; its processor is made on the reactor thread.</param>
    public void Add(ReactorRing ring) => Invoke(() =>
    {
        ring.OnFault = e => VhostLog.RequestFailed(_logger, e, ring.Name);
        ring.Attach(_queue!);
        if (ring.Kick is { } kick)
        {
            try
            {
                ring.KickWatch = _reactor.Watch(kick, FdEvents.Readable, new KickWatcher(this, kick), pollWhileBusy: false);
            }
            catch (IOException e)
            {
                VhostLog.KickNotWatched(_logger, ring.Name, e.Message);
                ring.Polled = true;
            }
        }

        _rings.Add(ring);
        ring.StartResubmit();
    });

    /// <summary>Stops a ring once its requests have completed; returns where it stopped reading the ring.</summary>
    /// <param name="ring">The ring.</param>
    /// <returns>The next available index it would have read.</returns>
    public ushort Remove(ReactorRing ring)
    {
        try
        {
            _reactor.Post(() => ring.Stopping = true);
        }
        catch (ObjectDisposedException)
        {
            // The reactor has stopped (the server is going away): the ring stopped with it.
            ring.LastAvail = ring.Virtqueue.LastAvailIndex;
            ring.Stopped.Set();
        }

        ring.Stopped.Wait();
        return ring.LastAvail;
    }

    /// <inheritdoc/>
    public PollStatus Poll()
    {
        bool busy = false;
        for (int i = _rings.Count - 1; i >= 0; i--)
        {
            var ring = _rings[i];
            var processor = ring.Processor!;
            processor.FlushNotifications(); // completions the reactor reaped since the last turn
            if (ring.Stopping)
            {
                if (processor.InFlight == 0)
                {
                    Detach(ring);
                    _rings.RemoveAt(i);
                    busy = true;
                }

                continue;
            }

            try
            {
                busy |= processor.Process(armKick: false) > 0;
            }
            catch (Exception e)
            {
                Fail(ring, e);
                busy = true;
            }

            busy |= ring.Polled;
        }

        return busy ? PollStatus.Busy : PollStatus.Idle;
    }

    /// <inheritdoc/>
    public PollStatus PrepareToSleep(ref int maxSleepMilliseconds)
    {
        int taken = 0;
        bool throttled = false;
        foreach (var ring in _rings)
        {
            if (ring.Stopping)
            {
                continue;
            }

            var processor = ring.Processor!;
            try
            {
                taken += processor.Process(armKick: true);
            }
            catch (Exception e)
            {
                Fail(ring, e);
                taken++;
                continue;
            }

            throttled |= processor.Throttled;
        }

        // A throttled tenant's requests wait in its ring with kicks off: look again soon.
        if (throttled && (maxSleepMilliseconds < 0 || maxSleepMilliseconds > 1))
        {
            maxSleepMilliseconds = 1;
        }

        return taken > 0 ? PollStatus.Busy : PollStatus.Idle;
    }

    // The ring's processing threw outside any one chain: it takes no more chains, and stops where it had read to
    // once its requests complete (GET_VRING_BASE must not answer an old index, or the front-end would replay
    // requests already done). The reactor and its other rings go on.
    private void Fail(ReactorRing ring, Exception e)
    {
        VhostLog.RingFailed(_logger, e, ring.Name);
        ring.Stopping = true;
    }

    private void Detach(ReactorRing ring)
    {
        ring.KickWatch?.Dispose();
        ring.KickWatch = null;
        ring.LastAvail = ring.Virtqueue.LastAvailIndex;
        ring.Processor!.Dispose();
        ring.Stopped.Set();
    }

    // Reads a kick eventfd when it wakes the reactor; the turn that follows looks at every ring.
    private sealed class KickWatcher(RingPoller poller, FileDescriptorHandle kick) : IFdWatcher
    {
        public void OnReady(FdEvents events)
        {
            ulong value;
            if (LibC.read(kick.Fd, &value, sizeof(ulong)) == sizeof(ulong))
            {
                Interlocked.Increment(ref poller._kicks); // one read empties an eventfd
            }
        }
    }
}

/// <summary>A ring as a reactor serves it: the virtqueue, its processor, its eventfds.</summary>
internal sealed unsafe class ReactorRing
{
    private readonly string _serial;
    private readonly int _tenant;
    private readonly IoClass _class;
    private readonly Action _signal;
    private ushort[]? _resubmit;

    public ReactorRing(string name, VringStart start, string serial, int tenant, IoClass ioClass = IoClass.Vm)
    {
        _class = ioClass;
        Name = name;
        Virtqueue = start.Virtqueue;
        Kick = start.Kick;
        Polled = start.Kick == null;
        Call = start.Call;
        _serial = serial;
        _tenant = tenant;
        Inflight = start.Inflight;
        _resubmit = start.Resubmit;
        _signal = RaiseInterrupt;
    }

    public string Name { get; }

    public SplitVirtqueue Virtqueue { get; }

    /// <summary>The kick eventfd (the session owns it), or null when the front-end polls.</summary>
    public FileDescriptorHandle? Kick { get; }

    /// <summary>The reactor's watch on <see cref="Kick"/>; reactor thread only.</summary>
    public FdWatch? KickWatch { get; set; }

    public bool Polled { get; set; }

    public InflightRegion? Inflight { get; }

    public VirtioBlkQueueProcessor? Processor { get; private set; }

    public bool Stopping { get; set; }

    public ushort LastAvail { get; set; }

    public ManualResetEventSlim Stopped { get; } = new();

    /// <summary>The export is read-only: the processor refuses writes.</summary>
    public bool ReadOnly { get; init; }

    /// <summary>Asked per write: the guest sees a write-through cache.</summary>
    public Func<bool>? WriteThrough { get; init; }

    /// <summary>Told of an unexpected exception while handling a chain (logged by the reactor).</summary>
    public Action<Exception>? OnFault { get; set; }

    /// <summary>The call eventfd (the session owns it); changed on the reactor thread only (QEMU swaps it while the ring runs).</summary>
    public FileDescriptorHandle? Call { get; set; }

    public void Attach(BlockQueue queue)
    {
        Processor = new VirtioBlkQueueProcessor(Virtqueue, queue, _serial, _tenant, _signal)
        {
            Class = _class,
            Inflight = Inflight,
            ReadOnly = ReadOnly,
            IsWriteThrough = WriteThrough,
            OnFault = OnFault,
        };
    }

    public void StartResubmit()
    {
        if (_resubmit is { Length: > 0 } heads)
        {
            _resubmit = null;
            Processor!.Resubmit(heads);
        }
    }

    private void RaiseInterrupt()
    {
        if (Call is { } call)
        {
            ulong one = 1;
            LibC.write(call.Fd, &one, sizeof(ulong));
        }
    }
}
