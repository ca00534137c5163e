using Hci.Core.Blocks;

namespace Hci.Core.Modules;

/// <summary>
/// A queue over an inner device's queue: each outer request travels as a shadow request with the same
/// operation, range and buffers, so decorators nest. Shadows are pooled: no allocation in steady state.
/// </summary>
public abstract class DecoratorQueue : BlockQueue, IBlockCompletionHandler
{
    private readonly Stack<BlockRequest> _shadows = new();
    private readonly Stack<List<BlockRequest>> _groups = new();

    /// <summary>Creates the queue and its inner queue.</summary>
    /// <param name="device">The decorating device.</param>
    /// <param name="inner">The wrapped device.</param>
    /// <param name="depth">Depth of the inner queue.</param>
    protected DecoratorQueue(BlockDevice device, BlockDevice inner, int depth)
        : base(device)
    {
        InnerQueue = (inner ?? throw new ArgumentNullException(nameof(inner))).CreateQueue(depth);
    }

    /// <summary>The inner device's queue.</summary>
    protected BlockQueue InnerQueue { get; }

    /// <inheritdoc/>
    public override void Wake() => InnerQueue.Wake();

    /// <inheritdoc/>
    public override bool TryRegisterBuffers(ReadOnlySpan<BlockSegment> regions) => InnerQueue.TryRegisterBuffers(regions);

    /// <inheritdoc/>
    public override bool TrySetWakeSource(int fd) => InnerQueue.TrySetWakeSource(fd);

    /// <inheritdoc/>
    /// <remarks>As the inner queue: a decorator over a replicated volume's queue completes through the reactor too.</remarks>
    public override bool CompletesThroughReactor => InnerQueue.CompletesThroughReactor;

    /// <inheritdoc/>
    public override bool BatchSubmissions
    {
        get => InnerQueue.BatchSubmissions;
        set => InnerQueue.BatchSubmissions = value;
    }

    /// <inheritdoc/>
    public override bool IsThrottled(int tenant) => InnerQueue.IsThrottled(tenant);

    /// <summary>Receives a shadow's completion from the inner queue.</summary>
    /// <param name="request">The shadow.</param>
    void IBlockCompletionHandler.OnCompleted(BlockRequest request)
    {
        var state = request.UserState!;
        request.UserState = null;
        OnInnerRequestCompleted();
        if (state is List<BlockRequest> group)
        {
            // A merged request: each part completes with its own length, or with the merged request's error.
            foreach (var outer in group)
            {
                OnInnerCompleted(outer, request.Result < 0 ? request.Result : (int)outer.Length, request.Error);
            }

            group.Clear();
            _groups.Push(group);
        }
        else
        {
            OnInnerCompleted((BlockRequest)state, request.Result, request.Error);
        }

        _shadows.Push(request);
    }

    /// <summary>
    /// Passes several reads or writes that follow one another on the device (same operation and flags, each
    /// starting where the previous ends) to the inner queue as one request whose segments are all of theirs.
    /// </summary>
    /// <param name="requests">The outer requests, in flight, in device order; their total must fit the geometry.</param>
    protected unsafe void ForwardMerged(ReadOnlySpan<BlockRequest> requests)
    {
        if (requests.Length == 1)
        {
            Forward(requests[0]);
            return;
        }

        int segments = 0;
        foreach (var r in requests)
        {
            segments += r.SegmentCount;
        }

        if (!_shadows.TryPop(out var shadow) || shadow.SegmentCapacity < segments)
        {
            shadow?.Dispose();
            shadow = new BlockRequest(Math.Max(segments, 64));
        }

        var group = _groups.TryPop(out var g) ? g : new List<BlockRequest>(16);
        shadow.Reset();
        shadow.Operation = requests[0].Operation;
        shadow.Flags = requests[0].Flags;
        shadow.Offset = requests[0].Offset;
        shadow.Class = requests[0].Class;
        shadow.Tenant = requests[0].Tenant;
        shadow.Handler = this;
        foreach (var r in requests)
        {
            foreach (var s in r.Segments)
            {
                shadow.AddSegment((void*)s.Address, (int)s.Length);
            }

            group.Add(r);
        }

        shadow.UserState = group;

        // Each part was validated; the caller keeps the merge within the maximum transfer and segments.
        InnerQueue.SubmitValidated(shadow);
    }

    /// <summary>Passes <paramref name="request"/> to the inner queue.</summary>
    /// <param name="request">The outer request, in flight.</param>
    protected unsafe void Forward(BlockRequest request)
    {
        if (!_shadows.TryPop(out var shadow) || shadow.SegmentCapacity < request.SegmentCount)
        {
            shadow?.Dispose();
            shadow = new BlockRequest(Math.Max(4, request.SegmentCount));
        }

        shadow.Reset();
        shadow.Operation = request.Operation;
        shadow.Flags = request.Flags;
        shadow.Offset = request.Offset;
        shadow.Class = request.Class;
        shadow.Tenant = request.Tenant;
        shadow.Handler = this;
        shadow.UserState = request;
        foreach (var s in request.Segments)
        {
            shadow.AddSegment((void*)s.Address, (int)s.Length);
        }

        if (request.SegmentCount == 0)
        {
            shadow.Length = request.Length;
        }

        // The outer queue validated the request against the same geometry.
        InnerQueue.SubmitValidated(shadow);
    }

    /// <summary>Called once per request the inner device completes (a merged request counts once), before its parts complete.</summary>
    protected virtual void OnInnerRequestCompleted()
    {
    }

    /// <summary>Called when the inner device has completed a forwarded request; by default completes it as is.</summary>
    /// <param name="request">The outer request.</param>
    /// <param name="result">The inner result.</param>
    /// <param name="error">The inner error.</param>
    protected virtual void OnInnerCompleted(BlockRequest request, int result, BlockError error) => Complete(request, result, error);

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        InnerQueue.Dispose();
        _groups.Clear();
        while (_shadows.TryPop(out var shadow))
        {
            shadow.Dispose();
        }

        base.Dispose(disposing);
    }
}
