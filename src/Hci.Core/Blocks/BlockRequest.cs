using System.Buffers;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Threading.Tasks.Sources;

namespace Hci.Core.Blocks;

/// <summary>
/// One block I/O: an operation, a range and scatter-gather buffers, reusable for any number of I/Os.
/// </summary>
/// <remarks>
/// <para>Requests are made once and pooled by their owner (one per queue slot, as a virtqueue or an iSCSI
/// task table would), so the data path allocates nothing. Buffers are native memory given as
/// pointer and length; the caller keeps them alive and unmoved until the request completes.</para>
/// <para>Completion arrives either through <see cref="Handler"/> (on the polling thread) or, with no
/// handler, through the request's own <see cref="IValueTaskSource{TResult}"/>, as used by
/// <see cref="BlockDevice.ExecuteAsync(BlockRequest, CancellationToken)"/>.</para>
/// </remarks>
public sealed unsafe class BlockRequest : IValueTaskSource<int>, IDisposable
{
    /// <summary>The most segments a request can be made with.</summary>
    public const int MaxSegmentsLimit = 1024;

    private readonly int _segmentCapacity;
    private BlockSegment* _segments;
    private ManualResetValueTaskSourceCore<int> _core;
    private MemoryHandle _pin;
    private int _state; // 0 idle, 1 in flight, 2 completed

    /// <summary>Creates a request able to carry up to <paramref name="segmentCapacity"/> buffer segments.</summary>
    /// <param name="segmentCapacity">From 1 to <see cref="MaxSegmentsLimit"/>.</param>
    public BlockRequest(int segmentCapacity = 1)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(segmentCapacity, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(segmentCapacity, MaxSegmentsLimit);
        _segmentCapacity = segmentCapacity;
        _segments = (BlockSegment*)NativeMemory.AllocZeroed((nuint)segmentCapacity, (nuint)sizeof(BlockSegment));
        _core.RunContinuationsAsynchronously = true;
    }

    /// <summary>The operation to carry out.</summary>
    public BlockOperation Operation { get; set; }

    /// <summary>Modifiers such as force unit access.</summary>
    public BlockRequestFlags Flags { get; set; }

    /// <summary>Byte offset on the device; a multiple of the logical block size.</summary>
    public long Offset { get; set; }

    /// <summary>
    /// Byte length: for reads and writes the sum of the segments (kept up to date by <see cref="AddSegment"/>),
    /// for discard and write-zeroes set directly; zero for flush.
    /// </summary>
    public long Length { get; set; }

    /// <summary>Number of segments added.</summary>
    public int SegmentCount { get; private set; }

    /// <summary>How many segments this request can carry.</summary>
    public int SegmentCapacity => _segmentCapacity;

    /// <summary>Called on completion; when null, completion goes to the request's value-task source.</summary>
    public IBlockCompletionHandler? Handler { get; set; }

    /// <summary>Who issued the request, for schedulers. Kept by <see cref="Reset"/>: a front-end sets it once per request object.</summary>
    public IoClass Class { get; set; }

    /// <summary>The tenant (volume, guest or session) the request belongs to, for schedulers; kept by <see cref="Reset"/>.</summary>
    public int Tenant { get; set; }

    /// <summary>
    /// Used by a scheduling layer while the request is in its hands (the time it arrived, in that layer's clock);
    /// owners leave it alone.
    /// </summary>
    public long SchedulerTimestamp { get; set; }

    private long _traceMark;
    private StageTicks _stageTicks;

    /// <summary>Free for the owner: a reference to find its own state from the request.</summary>
    public object? UserState { get; set; }

    /// <summary>Free for the owner: a number, for example a submission timestamp.</summary>
    public long UserTag { get; set; }

    /// <summary>After completion: bytes transferred (reads and writes), 0 for other operations, or a negative errno.</summary>
    public int Result { get; private set; }

    /// <summary>After completion: why it failed, or <see cref="BlockError.None"/>.</summary>
    public BlockError Error { get; private set; }

    /// <summary>After completion: the errno of a failure (positive), or 0.</summary>
    public int Errno => Result < 0 ? -Result : 0;

    /// <summary>True once completed without error.</summary>
    public bool Succeeded => _state == 2 && Error == BlockError.None;

    /// <summary>True while the request is submitted and not yet completed.</summary>
    public bool IsInFlight => _state == 1;

    /// <summary>The segments added so far.</summary>
    public ReadOnlySpan<BlockSegment> Segments => new(_segments, SegmentCount);

    internal BlockSegment* SegmentPointer => _segments;

    /// <summary>Intrusive link for queues that hold requests back (backpressure); owned by the queue in flight.</summary>
    internal BlockRequest? Next;

    /// <summary>Slot in the queue's table while in flight.</summary>
    internal int Slot;

    /// <summary>Bytes already done when a transfer is resumed after a short completion.</summary>
    internal int Progress;

    /// <summary>Result held for delivery at the next poll.</summary>
    internal int PendingResult;

    /// <summary>Error held for delivery at the next poll.</summary>
    internal BlockError PendingError;

    /// <summary>When a held completion is due (delay decorator), in <see cref="TimeProvider"/> ticks.</summary>
    internal long DueTimestamp;

    /// <summary>True while the request is traced (between <see cref="StartTrace()"/> and <see cref="EndTrace()"/>).</summary>
    public bool IsTraced => _traceMark != 0;

    /// <summary>
    /// Starts recording the time this request spends in each <see cref="RequestStage"/>: a front-end calls it when it
    /// takes the request in (a descriptor popped, a command read), before it fills the request in and submits it.
    /// Queues mark the stages in between; <see cref="EndTrace()"/> records them (<see cref="RequestStages"/>). Does
    /// nothing when <see cref="RequestStages.Enabled"/> is false. No allocation.
    /// </summary>
    public void StartTrace() => StartTrace(RequestStages.Enabled ? Stopwatch.GetTimestamp() : 0);

    /// <summary>Starts the trace at <paramref name="timestamp"/> (<see cref="Stopwatch.GetTimestamp"/>), so that a front-end
    /// that takes requests in batches reads the clock once per batch.</summary>
    /// <param name="timestamp">When the front-end took the request in.</param>
    public void StartTrace(long timestamp)
    {
        if (!RequestStages.Enabled || timestamp == 0)
        {
            _traceMark = 0;
            return;
        }

        _stageTicks = default;
        _traceMark = timestamp;
    }

    /// <summary>Ends the trace started by <see cref="StartTrace()"/>: the time since the device's completion counts as
    /// <see cref="RequestStage.Completion"/>, and every stage's time is recorded under the request's
    /// <see cref="Class"/>. A front-end calls it once it has answered (used ring written and interrupt raised).</summary>
    public void EndTrace()
    {
        if (_traceMark != 0)
        {
            EndTrace(Stopwatch.GetTimestamp());
        }
    }

    /// <summary>Ends the trace at <paramref name="timestamp"/>, so that a front-end that answers in batches reads the
    /// clock once per batch.</summary>
    /// <param name="timestamp">When the front-end had answered (<see cref="Stopwatch.GetTimestamp"/>).</param>
    public void EndTrace(long timestamp)
    {
        if (_traceMark == 0)
        {
            return;
        }

        MarkStage(RequestStage.Completion, timestamp);
        _traceMark = 0;
        RequestStages.Record(Class, ref _stageTicks);
    }

    /// <summary>For queues and schedulers: the time since the last mark (the trace's start, or the previous stage's
    /// end) was spent in <paramref name="stage"/>. Nothing when the request is not traced. Block queues mark the
    /// front-end stage at submission and their <see cref="BlockQueue.CompletionStage"/> at completion themselves.</summary>
    /// <param name="stage">The stage that just ended.</param>
    public void MarkStage(RequestStage stage)
    {
        if (_traceMark != 0)
        {
            MarkStage(stage, Stopwatch.GetTimestamp());
        }
    }

    /// <summary>Like <see cref="MarkStage(RequestStage)"/>, at <paramref name="timestamp"/> (a clock read once for a batch).</summary>
    /// <param name="stage">The stage that just ended.</param>
    /// <param name="timestamp">When it ended (<see cref="Stopwatch.GetTimestamp"/>).</param>
    public void MarkStage(RequestStage stage, long timestamp)
    {
        if (_traceMark == 0)
        {
            return;
        }

        _stageTicks[(int)stage] += Math.Max(0, timestamp - _traceMark);
        _traceMark = Math.Max(_traceMark, timestamp);
    }

    /// <summary>The time since the last mark was spent in the front-end, unless a queue already marked it (a request
    /// is submitted to the first queue once, and decorators pass copies below).</summary>
    internal void MarkSubmitted()
    {
        if (_traceMark != 0 && _stageTicks[(int)RequestStage.FrontEnd] == 0)
        {
            MarkStage(RequestStage.FrontEnd);
        }
    }

    /// <summary>Clears the operation, range, segments and result so that the request can be used again.</summary>
    /// <exception cref="InvalidOperationException">The request is in flight.</exception>
    public void Reset()
    {
        ThrowIfInFlight();
        Operation = BlockOperation.Read;
        Flags = BlockRequestFlags.None;
        Offset = 0;
        Length = 0;
        SegmentCount = 0;
        Result = 0;
        Error = BlockError.None;
        _state = 0;
        Progress = 0;
    }

    /// <summary>Sets up a read or write of one buffer.</summary>
    /// <param name="operation">Read or write.</param>
    /// <param name="offset">Byte offset on the device.</param>
    /// <param name="buffer">Native buffer, alive and unmoved until completion.</param>
    /// <param name="length">Byte length.</param>
    /// <param name="flags">Modifiers.</param>
    public void SetReadWrite(BlockOperation operation, long offset, void* buffer, int length, BlockRequestFlags flags = BlockRequestFlags.None)
    {
        if (operation is not (BlockOperation.Read or BlockOperation.Write))
        {
            throw new ArgumentOutOfRangeException(nameof(operation), operation, "Only reads and writes carry buffers.");
        }

        Reset();
        Operation = operation;
        Offset = offset;
        Flags = flags;
        AddSegment(buffer, length);
    }

    /// <summary>Sets up an operation without buffers: flush, discard or write-zeroes.</summary>
    /// <param name="operation">Flush, discard or write-zeroes.</param>
    /// <param name="offset">Byte offset (ignored for flush).</param>
    /// <param name="length">Byte length (ignored for flush).</param>
    public void SetRange(BlockOperation operation, long offset, long length)
    {
        if (operation is BlockOperation.Read or BlockOperation.Write)
        {
            throw new ArgumentOutOfRangeException(nameof(operation), operation, "Reads and writes need buffers: use SetReadWrite or AddSegment.");
        }

        Reset();
        Operation = operation;
        Offset = operation == BlockOperation.Flush ? 0 : offset;
        Length = operation == BlockOperation.Flush ? 0 : length;
    }

    /// <summary>Appends a buffer segment and adds its length to <see cref="Length"/>.</summary>
    /// <param name="buffer">Native memory, alive and unmoved until completion.</param>
    /// <param name="length">Bytes in this segment, positive.</param>
    /// <exception cref="InvalidOperationException">The request is in flight or has no room for another segment.</exception>
    public void AddSegment(void* buffer, int length)
    {
        ThrowIfInFlight();
        if (SegmentCount == _segmentCapacity)
        {
            throw new InvalidOperationException($"This request holds at most {_segmentCapacity} segments; create it with a larger segment capacity.");
        }

        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);
        if (buffer == null)
        {
            throw new ArgumentNullException(nameof(buffer));
        }

        _segments[SegmentCount++] = new BlockSegment((nint)buffer, length);
        Length += length;
    }

    internal void AttachPin(MemoryHandle pin) => _pin = pin;

    internal void BeginSubmit()
    {
        if (_state == 1)
        {
            ThrowInFlight();
        }

        _state = 1;
        Result = 0;
        Error = BlockError.None;
        Progress = 0;
        Next = null;
    }

    /// <summary>Marks the request complete and notifies its handler or awaiter.</summary>
    internal void Complete(int result, BlockError error)
    {
        Debug.Assert(_state == 1);
        Result = result;
        Error = result < 0 && error == BlockError.None ? BlockError.Device : error;
        _state = 2;
        _pin.Dispose();
        _pin = default;
        var handler = Handler;
        if (handler != null)
        {
            handler.OnCompleted(this);
        }
        else
        {
            _core.SetResult(result);
        }
    }

    /// <summary>Prepares the value-task source for one await.</summary>
    internal ValueTask<int> PrepareAwait()
    {
        _core.Reset();
        return new ValueTask<int>(this, _core.Version);
    }

    /// <summary>Builds the exception that describes this request's failure.</summary>
    /// <param name="deviceName">Name of the device, for the message.</param>
    /// <returns>The exception, or null when the request succeeded.</returns>
    public BlockDeviceException? ToException(string deviceName)
        => Error == BlockError.None ? null : new BlockDeviceException(deviceName, Operation, Offset, Length, Error, Errno);

    int IValueTaskSource<int>.GetResult(short token) => _core.GetResult(token);

    ValueTaskSourceStatus IValueTaskSource<int>.GetStatus(short token) => _core.GetStatus(token);

    void IValueTaskSource<int>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
        => _core.OnCompleted(continuation, state, token, flags);

    /// <summary>Frees the native segment table. The request must not be in flight.</summary>
    public void Dispose()
    {
        if (_state == 1)
        {
            throw new InvalidOperationException("A request in flight cannot be disposed; wait for its completion.");
        }

        if (_segments != null)
        {
            NativeMemory.Free(_segments);
            _segments = null;
        }

        GC.SuppressFinalize(this);
    }

    /// <summary>Frees the native segment table if <see cref="Dispose"/> was not called.</summary>
    ~BlockRequest()
    {
        if (_segments != null)
        {
            NativeMemory.Free(_segments);
            _segments = null;
        }
    }

    private void ThrowIfInFlight()
    {
        if (_state == 1)
        {
            ThrowInFlight();
        }
    }

    private static void ThrowInFlight() => throw new InvalidOperationException("The request is in flight; wait for its completion before changing or resubmitting it.");
}
