using System.Collections.Concurrent;

namespace Hci.Core.Blocks;

/// <summary>
/// The thread behind <see cref="BlockDevice"/>'s asynchronous API: owns one queue, takes requests posted
/// from any thread, and completes their value tasks (continuations run on the thread pool, never here).
/// </summary>
internal sealed class BlockReactor
{
    private readonly BlockQueue _queue;
    private readonly ConcurrentQueue<BlockRequest> _inbox = new();
    private readonly Thread _thread;
    private readonly TaskCompletionSource _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Lock _gate = new();
    private int _sleeping;
    private volatile bool _stopping;
    private bool _closed;

    public BlockReactor(BlockDevice device)
    {
        _queue = device.CreateQueue(128);
        using (ExecutionContext.SuppressFlow())
        {
            _thread = new Thread(Run) { IsBackground = true, Name = $"hci-reactor {device.Engine}" };
            _thread.Start();
        }
    }

    /// <summary>Test seam: runs in <see cref="Post"/> after the request passed its first check (to widen the race with a stop).</summary>
    internal Action? AfterAdmission { get; set; }

    public void Post(BlockRequest request)
    {
        // The gate orders a post against the reactor's last look at the inbox: a request is either enqueued
        // before the reactor closes the gate (and then served or cancelled by its final drain) or refused here.
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

        if (Volatile.Read(ref _sleeping) != 0 && Interlocked.Exchange(ref _sleeping, 0) != 0)
        {
            _queue.Wake();
        }
    }

    public Task StopAsync()
    {
        _stopping = true;
        Interlocked.Exchange(ref _sleeping, 0);
        _queue.Wake();
        return _stopped.Task;
    }

    private void Run()
    {
        try
        {
            while (true)
            {
                while (_inbox.TryDequeue(out var request))
                {
                    _queue.Submit(request);
                }

                if (_stopping && _inbox.IsEmpty && _queue.InFlight == 0)
                {
                    break;
                }

                // Announce the sleep, then look at the inbox once more: a poster either sees the flag and wakes us,
                // or its request is seen here.
                Interlocked.Exchange(ref _sleeping, 1);
                if (!_inbox.IsEmpty || _stopping)
                {
                    Interlocked.Exchange(ref _sleeping, 0);
                    _queue.Poll(0, 0);
                    continue;
                }

                _queue.Poll(1, 1000);
                Interlocked.Exchange(ref _sleeping, 0);
            }

            lock (_gate)
            {
                _closed = true;
            }

            _queue.Dispose();

            // A request posted while the device was being disposed is answered, never left to hang its awaiter.
            while (_inbox.TryDequeue(out var late))
            {
                late.BeginSubmit();
                late.Complete(-Errno.ECANCELED, BlockError.Canceled);
            }

            _stopped.SetResult();
        }
        catch (Exception ex)
        {
            Environment.FailFast("Hci block reactor failed: " + ex);
        }
    }
}
