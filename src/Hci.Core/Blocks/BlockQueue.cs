namespace Hci.Core.Blocks;

/// <summary>
/// A submission and completion queue on a device, owned by one thread (a reactor): the data path.
/// </summary>
/// <remarks>
/// <para>The owner thread calls <see cref="Submit"/> and <see cref="Poll"/>; completions are delivered
/// inside <see cref="Poll"/> on that same thread, to each request's <see cref="BlockRequest.Handler"/>.
/// Nothing is allocated, no lock is taken and no other thread is involved per request. Only
/// <see cref="Wake"/> may be called from other threads.</para>
/// <para>Submission never fails for lack of room: a request beyond the device's queue depth is held
/// and submitted when a slot frees (backpressure is a delay, not an exception). A request that breaks
/// the geometry is refused before it reaches the device and completes with <see cref="BlockError"/>
/// and errno set.</para>
/// </remarks>
public abstract class BlockQueue : IDisposable
{
    private readonly BlockDevice _device;
    private BlockRequest? _deferredHead;
    private BlockRequest? _deferredTail;
    private int _deferredCount;
    private int _inFlight;
    private int _owner;
    private bool _disposed;

    /// <summary>Creates the queue for <paramref name="device"/>.</summary>
    /// <param name="device">The device the queue belongs to.</param>
    protected BlockQueue(BlockDevice device)
    {
        _device = device ?? throw new ArgumentNullException(nameof(device));
    }

    /// <summary>The device this queue submits to.</summary>
    public BlockDevice Device => _device;

    /// <summary>Requests submitted and not yet delivered as completed.</summary>
    public int InFlight => _inFlight;

    /// <summary>True once <see cref="Dispose()"/> has run.</summary>
    protected bool IsDisposed => _disposed;

    /// <summary>
    /// Submits a request. It is validated against the device's geometry first; a refusal completes it at the
    /// next <see cref="Poll"/> with <see cref="BlockRequest.Error"/> set. Submission to the device may be
    /// batched until the next <see cref="Poll"/>.
    /// </summary>
    /// <param name="request">An idle request with its operation, range and buffers set.</param>
    /// <exception cref="InvalidOperationException">The request is already in flight.</exception>
    /// <exception cref="ObjectDisposedException">The queue is disposed.</exception>
    public void Submit(BlockRequest request)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        CheckOwner();
        request.BeginSubmit();
        request.MarkSubmitted();
        _inFlight++;
        var error = _device.Validate(request, out int errno);
        if (error != BlockError.None)
        {
            CompleteLater(request, -errno, error);
            return;
        }

        SubmitCore(request);
    }

    /// <summary>
    /// Submits a request that an outer queue of a device with the same geometry has already validated
    /// (a decorator's shadow): checking it again would be the same work twice per I/O.
    /// </summary>
    /// <param name="request">An idle, validated request.</param>
    internal void SubmitValidated(BlockRequest request)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        CheckOwner();
        request.BeginSubmit();
        _inFlight++;
        SubmitCore(request);
    }

    /// <summary>
    /// Sends batched submissions to the device and delivers completions to their handlers.
    /// </summary>
    /// <param name="minCompletions">
    /// Wait until at least this many requests have completed (clamped to <see cref="InFlight"/> when the
    /// timeout is infinite, so that a poll never waits for work that does not exist). 0 never waits.
    /// </param>
    /// <param name="timeoutMilliseconds">Longest wait; <see cref="Timeout.Infinite"/> for none. A poll also
    /// returns early when <see cref="Wake"/> is called.</param>
    /// <returns>The number of completions delivered.</returns>
    public int Poll(int minCompletions = 1, int timeoutMilliseconds = Timeout.Infinite)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        CheckOwner();
        return PollInternal(minCompletions, timeoutMilliseconds);
    }

    /// <summary>Makes a waiting <see cref="Poll"/> return soon. Safe from any thread.</summary>
    public abstract void Wake();

    /// <summary>
    /// Registers native memory regions with the device so that transfers inside them skip per-I/O page pinning
    /// (io_uring fixed buffers). A capability: queues that gain nothing from it answer false.
    /// </summary>
    /// <param name="regions">Regions such as <see cref="Buffers.AlignedBufferPool.Slab"/>; they must outlive the queue.</param>
    /// <returns>True when registered.</returns>
    public virtual bool TryRegisterBuffers(ReadOnlySpan<BlockSegment> regions) => false;

    /// <summary>
    /// When true, <see cref="Submit"/> only stages requests and the next <see cref="Poll"/> hands them to the
    /// device together (one system call for the batch on io_uring). Suits a reactor that takes requests in
    /// batches from elsewhere (a virtqueue) and polls right after; by default a request starts at once.
    /// </summary>
    public virtual bool BatchSubmissions { get; set; }

    /// <summary>
    /// Makes a waiting <see cref="Poll"/> also return when <paramref name="fd"/> becomes readable, so that a reactor
    /// can sleep on its device and on other events (a virtqueue kick, a socket) in one wait, with no thread in
    /// between. The caller still reads the fd itself. A capability: queues that cannot watch descriptors answer
    /// false, and the caller must then wait on the descriptor on its own (bounding its polls with a timeout).
    /// </summary>
    /// <param name="fd">A pollable descriptor (an eventfd or an epoll fd) that outlives the queue; -1 removes it.</param>
    /// <returns>True when the queue watches it.</returns>
    public virtual bool TrySetWakeSource(int fd) => false;

    /// <summary>
    /// True when the policy behind this queue is holding <paramref name="tenant"/>'s I/O back now (a scheduler's
    /// throttle), so that a front-end may leave that tenant's requests at the edge instead of queuing them here.
    /// </summary>
    /// <param name="tenant">The tenant.</param>
    /// <returns>False for queues with no such policy.</returns>
    public virtual bool IsThrottled(int tenant) => false;

    /// <summary>
    /// True when every completion of this queue is announced through the reactor that polls it: a descriptor it
    /// watches there, another queue of that reactor, or <see cref="Reactors.Reactor.Wake"/>. A reactor never needs to
    /// sleep inside such a queue, so it does not count it when it decides where to sleep (a replicated volume's queue,
    /// whose answers come from peers' sockets and from the local device's own queue).
    /// </summary>
    public virtual bool CompletesThroughReactor => false;

    /// <summary>Waits for every request in flight, then releases the queue's resources.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        if (_inFlight > 0)
        {
            CheckOwner();
        }

        // Drain runs the completion handlers, which may throw. While requests are still at the device the queue
        // stays open and the exception propagates (Dispose may be called again): freeing the ring under requests
        // the kernel still holds would let it complete into memory that is no longer ours.
        Exception? failure = null;
        try
        {
            Drain();
        }
        catch (Exception e) when (_inFlight == 0)
        {
            failure = e;
        }

        _disposed = true;
        Dispose(true);
        _device.OnQueueClosed();
        GC.SuppressFinalize(this);
        if (failure != null)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failure);
        }
    }

    /// <summary>Starts a validated request on the device.</summary>
    /// <param name="request">The request, in flight.</param>
    protected abstract void SubmitCore(BlockRequest request);

    /// <summary>
    /// Flushes batched submissions and reaps device completions, calling <see cref="Complete"/> for each;
    /// waits for <paramref name="minCompletions"/> of them, for a wake or for the timeout.
    /// </summary>
    /// <param name="minCompletions">Completions to wait for; 0 means do not block.</param>
    /// <param name="timeoutMilliseconds">Longest wait, or <see cref="Timeout.Infinite"/>.</param>
    /// <returns>Completions delivered.</returns>
    protected abstract int PollCore(int minCompletions, int timeoutMilliseconds);

    /// <summary>Completes a request now, on the polling thread.</summary>
    /// <param name="request">The request in flight.</param>
    /// <param name="result">Bytes transferred or a negative errno.</param>
    /// <param name="error">A refusal reason, or <see cref="BlockError.None"/> (then a negative result means a device error).</param>
    protected void Complete(BlockRequest request, int result, BlockError error = BlockError.None)
    {
        if (request.IsTraced)
        {
            request.MarkStage(CompletionStage, Clock());
        }

        _inFlight--;
        request.Complete(result, error);
    }

    /// <summary>Holds a completion for delivery at the next poll (used by synchronous devices and refusals).</summary>
    /// <param name="request">The request in flight.</param>
    /// <param name="result">Bytes transferred or a negative errno.</param>
    /// <param name="error">A refusal reason, or <see cref="BlockError.None"/>.</param>
    protected void CompleteLater(BlockRequest request, int result, BlockError error = BlockError.None)
    {
        if (request.IsTraced)
        {
            request.MarkStage(CompletionStage, Clock());
        }

        request.PendingResult = result;
        request.PendingError = error;
        request.Next = null;
        if (_deferredTail == null)
        {
            _deferredHead = request;
        }
        else
        {
            _deferredTail.Next = request;
        }

        _deferredTail = request;
        _deferredCount++;
    }

    /// <summary>The stage a traced request's time up to its completion here counts as (<see cref="RequestStage.Device"/>;
    /// a replicated volume's queue answers <see cref="RequestStage.Replication"/>).</summary>
    protected internal virtual RequestStage CompletionStage => RequestStage.Device;

    /// <summary>True when completions are held for the next poll: a poll must not block then.</summary>
    protected bool HasDeferredCompletions => _deferredCount != 0;

    /// <summary>Releases the queue's resources once nothing is in flight.</summary>
    /// <param name="disposing">True from <see cref="Dispose()"/>.</param>
    protected virtual void Dispose(bool disposing)
    {
    }

    /// <summary>Waits for every request in flight to complete.</summary>
    protected void Drain()
    {
        while (_inFlight > 0)
        {
            PollInternal(_inFlight, Timeout.Infinite);
        }
    }

    /// <summary>The first thread to submit or poll owns the queue; any other is refused before anything changes.</summary>
    private bool _polling;
    private long _clock;

    private void CheckOwner()
    {
        int current = Environment.CurrentManagedThreadId;
        int owner = _owner;
        if (owner == current)
        {
            return;
        }

        if (owner == 0)
        {
            _owner = current;
            return;
        }

        ThrowNotOwner();
    }

    private static void ThrowNotOwner()
        => throw new InvalidOperationException("A block queue was used from a thread other than the one that first used it; a queue belongs to one thread (create one queue per thread).");

    // The clock for traced completions: read once per poll, at the first completion (after any wait), since a poll
    // delivers its completions together; outside a poll, read each time.
    private long Clock()
    {
        if (!_polling)
        {
            return System.Diagnostics.Stopwatch.GetTimestamp();
        }

        if (_clock == 0)
        {
            _clock = System.Diagnostics.Stopwatch.GetTimestamp();
        }

        return _clock;
    }

    private int PollInternal(int minCompletions, int timeoutMilliseconds)
    {
        bool nested = _polling;
        _polling = true;
        _clock = 0;
        int done = PollOnce(minCompletions, timeoutMilliseconds);
        _polling = nested;
        _clock = 0;
        return done;
    }

    private int PollOnce(int minCompletions, int timeoutMilliseconds)
    {
        if (timeoutMilliseconds == Timeout.Infinite && minCompletions > _inFlight)
        {
            minCompletions = _inFlight;
        }

        int done = DeliverDeferred();
        int remaining = HasDeferredCompletions ? 0 : Math.Max(0, minCompletions - done);
        bool idleWait = minCompletions > 0 && done == 0 && !HasDeferredCompletions;
        done += PollCore(remaining, remaining > 0 || idleWait ? timeoutMilliseconds : 0);
        done += DeliverDeferred();
        return done;
    }

    private int DeliverDeferred()
    {
        int count = _deferredCount;
        int delivered = 0;
        while (delivered < count)
        {
            var request = _deferredHead!;
            _deferredHead = request.Next;
            if (_deferredHead == null)
            {
                _deferredTail = null;
            }

            request.Next = null;
            _deferredCount--;
            delivered++;
            Complete(request, request.PendingResult, request.PendingError);
        }

        return delivered;
    }
}
