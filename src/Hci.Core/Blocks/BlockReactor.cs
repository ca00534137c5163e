using System.Collections.Concurrent;
using Hci.Core.Reactors;

namespace Hci.Core.Blocks;

/// <summary>
/// What serves <see cref="BlockDevice"/>'s asynchronous API: a poller on a <see cref="Reactor"/> of the device's own
/// that takes requests posted from any thread into one queue and completes their value tasks (continuations run on
/// the thread pool, never on the reactor).
/// </summary>
internal sealed class BlockReactor : IPoller
{
    private readonly Reactor _reactor;
    private readonly ConcurrentQueue<BlockRequest> _inbox = new();
    private readonly TaskCompletionSource _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Lock _gate = new();
    private BlockQueue? _queue;
    private volatile bool _stopping;
    private bool _closed;

    public BlockReactor(BlockDevice device)
    {
        // Control plane: sleep as soon as there is nothing to do, rather than poll.
        _reactor = new Reactor(new ReactorOptions { Name = $"hci-reactor {device.Engine}", PollWindow = TimeSpan.Zero });
        _reactor.InvokeAsync(() =>
        {
            _queue = _reactor.OpenQueue(device, 128);
            _reactor.AddPoller(this);
        }).GetAwaiter().GetResult();
    }

    /// <summary>Test seam: runs in <see cref="Post"/> after the request passed its first check (to widen the race with a stop).</summary>
    internal Action? AfterAdmission { get; set; }

    public void Post(BlockRequest request)
    {
        // The gate orders a post against the reactor's last look at the inbox: a request is either enqueued
        // before the poller closes the gate (and then served or cancelled by its final drain) or refused here.
        // Control-plane path only (the data path uses queues directly), so a lock per post costs nothing that matters.
        if (_stopping)
        {
            throw new ObjectDisposedException(nameof(BlockDevice), "The device is being disposed.");
        }

        AfterAdmission?.Invoke();
        lock (_gate)
        {
            if (_closed)
            {
                throw new ObjectDisposedException(nameof(BlockDevice), "The device has been disposed.");
            }

            _inbox.Enqueue(request);
        }

        _reactor.Wake();
    }

    public Task StopAsync()
    {
        _stopping = true;
        _reactor.Wake();
        return _stopped.Task;
    }

    public PollStatus Poll()
    {
        if (_closed)
        {
            return PollStatus.Idle;
        }

        var queue = _queue!;
        bool busy = false;
        while (_inbox.TryDequeue(out var request))
        {
            queue.Submit(request);
            busy = true;
        }

        if (_stopping && !busy && queue.InFlight == 0)
        {
            Close(queue);
        }

        return busy ? PollStatus.Busy : PollStatus.Idle;
    }

    // The reactor announced its sleep before asking: a poster either sees it asleep and wakes it, or its request is seen here.
    public PollStatus PrepareToSleep(ref int maxSleepMilliseconds) => _inbox.IsEmpty && !_stopping ? PollStatus.Idle : PollStatus.Busy;

    private void Close(BlockQueue queue)
    {
        lock (_gate)
        {
            _closed = true;
        }

        // A request posted while the device was being disposed is answered, never left to hang its awaiter.
        while (_inbox.TryDequeue(out var late))
        {
            late.BeginSubmit();
            late.Complete(-Errno.ECANCELED, BlockError.Canceled);
        }

        _reactor.ReleaseQueue(queue);
        _reactor.StopAsync().ContinueWith(_ => _stopped.TrySetResult(), TaskScheduler.Default);
    }
}
