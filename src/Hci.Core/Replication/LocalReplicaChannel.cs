using Hci.Core.Reactors;
using Hci.Core.Storage;

namespace Hci.Core.Replication;

/// <summary>
/// The channel to this node's own replica stores, in process: a request goes to the queue of the store its
/// <see cref="ReplicaRequest.Device"/> names, on the calling thread, with no network and no thread hop. Answers come
/// only from <see cref="Poll"/> (or the reactor the channel was opened on, which polls it every turn).
/// </summary>
internal sealed class LocalReplicaChannel : ReplicaChannel, IPoller
{
    private readonly string _nodeId;
    private readonly ReplicaStoreQueue[] _queues;
    private readonly IDisposable? _registration;
    private ReplicaRequest? _refusedHead;
    private ReplicaRequest? _refusedTail;
    private int _refused;
    private bool _disposed;

    /// <summary>Opens a queue on every store for the calling thread, or for <paramref name="reactor"/>'s (call it on
    /// that thread: the channel registers itself as a poller there).</summary>
    public LocalReplicaChannel(string nodeId, IReadOnlyList<ReplicaStore> stores, Reactor? reactor)
    {
        _nodeId = nodeId;
        _queues = new ReplicaStoreQueue[stores.Count];
        try
        {
            for (int i = 0; i < _queues.Length; i++)
            {
                _queues[i] = stores[i].CreateQueue(reactor);
            }

            _registration = reactor?.AddPoller(this);
        }
        catch
        {
            foreach (var q in _queues)
            {
                q?.Dispose();
            }

            throw;
        }
    }

    /// <inheritdoc/>
    public override string NodeId => _nodeId;

    /// <inheritdoc/>
    public override bool IsConnected => !_disposed;

    /// <inheritdoc/>
    public override int InFlight
    {
        get
        {
            int n = _refused;
            foreach (var q in _queues)
            {
                n += q.InFlight;
            }

            return n;
        }
    }

    /// <inheritdoc/>
    public override void Submit(ReplicaRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        int device = request.Device;
        if (_disposed || (uint)device >= (uint)_queues.Length)
        {
            request.Status = _disposed ? ReplicaStatus.Unavailable : ReplicaStatus.Invalid;
            request.Result = 0;
            request.Next = null;
            if (_refusedTail == null)
            {
                _refusedHead = request;
            }
            else
            {
                _refusedTail.Next = request;
            }

            _refusedTail = request;
            _refused++;
            return;
        }

        _queues[device].Submit(request);
    }

    /// <inheritdoc/>
    public override int Poll()
    {
        int answered = 0;
        var refused = _refusedHead;
        _refusedHead = _refusedTail = null;
        while (refused != null)
        {
            var r = refused;
            refused = r.Next;
            r.Next = null;
            _refused--;
            answered++;
            r.Complete(r.Status, 0);
        }

        foreach (var q in _queues)
        {
            answered += q.Poll();
        }

        return answered;
    }

    /// <inheritdoc/>
    PollStatus IPoller.Poll() => Poll() > 0 ? PollStatus.Busy : PollStatus.Idle;

    /// <inheritdoc/>
    PollStatus IPoller.PrepareToSleep(ref int maxSleepMilliseconds)
    {
        if (_refusedHead != null)
        {
            return PollStatus.Busy;
        }

        foreach (var q in _queues)
        {
            if (q.HasAnswers)
            {
                return PollStatus.Busy;
            }

            if (q.HasParked && q.DeviceInFlight == 0)
            {
                // Waiting on a metadata page another thread's queue is writing: nothing of ours will wake the reactor
                // when it lands, so look again soon. With device I/O of our own in flight, its completion wakes us
                // (spinning here instead cost a core per busy reactor).
                maxSleepMilliseconds = maxSleepMilliseconds < 0 ? 1 : Math.Min(maxSleepMilliseconds, 1);
            }
        }

        return PollStatus.Idle;
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (_disposed || !disposing)
        {
            return;
        }

        _disposed = true;
        _registration?.Dispose();
        foreach (var q in _queues)
        {
            q.Dispose(); // waits for the requests in flight and answers them
        }

        // Answer what was refused; the queues are closed, so they are not polled again.
        var refused = _refusedHead;
        _refusedHead = _refusedTail = null;
        while (refused != null)
        {
            var r = refused;
            refused = r.Next;
            r.Next = null;
            _refused--;
            r.Complete(r.Status, 0);
        }
    }
}
