using System.Runtime.InteropServices;
using Hci.Core.Blocks;

namespace Hci.Core.Replication;

/// <summary>
/// One operation on one replica store: a range of one extent of one volume, stamped with the owner's epoch. Pooled
/// and reused by its owner (one per volume request and replica), like <see cref="BlockRequest"/>; the segments are
/// native memory (guest memory, registered buffers) that must stay valid until the handler runs.
/// </summary>
public sealed unsafe class ReplicaRequest : IDisposable
{
    private readonly int _segmentCapacity;
    private BlockSegment* _segments;

    /// <summary>Creates a request able to carry <paramref name="segmentCapacity"/> segments.</summary>
    /// <param name="segmentCapacity">1 to <see cref="BlockRequest.MaxSegmentsLimit"/>.</param>
    public ReplicaRequest(int segmentCapacity = 1)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(segmentCapacity, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(segmentCapacity, BlockRequest.MaxSegmentsLimit);
        _segmentCapacity = segmentCapacity;
        _segments = (BlockSegment*)NativeMemory.AllocZeroed((nuint)segmentCapacity, (nuint)sizeof(BlockSegment));
    }

    /// <summary>The operation.</summary>
    public ReplicaOperation Operation { get; set; }

    /// <summary>The volume's id (from the volume table).</summary>
    public ulong VolumeId { get; set; }

    /// <summary>The extent's index in the volume.</summary>
    public long Extent { get; set; }

    /// <summary>The byte offset in the extent; a multiple of <see cref="ReplicaGeometry.BlockSize"/>.</summary>
    public long Offset { get; set; }

    /// <summary>The bytes the operation covers; a multiple of <see cref="ReplicaGeometry.BlockSize"/>, at most
    /// <see cref="ReplicaGeometry.MaxTransfer"/>. For reads and writes, the segments' total.</summary>
    public int Length { get; set; }

    /// <summary>The device on the node (its index in the node's device list).</summary>
    public int Device { get; set; }

    /// <summary>The owner's epoch for the volume; a store refuses a request older than the newest it has seen.</summary>
    public ulong Epoch { get; set; }

    /// <summary>An operation's argument (<see cref="ReplicaOperation.MarkClean"/>: the region mask).</summary>
    public ulong Argument { get; set; }

    /// <summary>Durability for writes (<see cref="BlockRequestFlags.ForceUnitAccess"/>).</summary>
    public BlockRequestFlags Flags { get; set; }

    /// <summary>The scheduler class the store's device I/O runs in (<see cref="IoClass.Background"/> for resync and
    /// repair).</summary>
    public IoClass Class { get; set; }

    /// <summary>
    /// One CRC-32C per <see cref="ReplicaGeometry.BlockSize"/> block of the range, or null. Writes: the sender's
    /// checksums of the data (the store keeps them; the wire carries them and the receiver checks them). Reads and
    /// <see cref="ReplicaOperation.ReadChecksums"/>: filled with the stored checksums.
    /// </summary>
    public uint* Checksums { get; set; }

    /// <summary>The segments: where reads land and writes come from.</summary>
    public ReadOnlySpan<BlockSegment> Segments => new(_segments, SegmentCount);

    /// <summary>How many segments are set.</summary>
    public int SegmentCount { get; private set; }

    /// <summary>How many segments the request can carry.</summary>
    public int SegmentCapacity => _segmentCapacity;

    /// <summary>Who hears the answer.</summary>
    public IReplicaCompletionHandler? Handler { get; set; }

    /// <summary>The submitter's state.</summary>
    public object? UserState { get; set; }

    /// <summary>The submitter's tag.</summary>
    public long UserTag { get; set; }

    /// <summary>The answer.</summary>
    public ReplicaStatus Status { get; set; }

    /// <summary>The operation's result: bytes moved, a count for list operations, or a negative errno with
    /// <see cref="ReplicaStatus.IoError"/>.</summary>
    public int Result { get; set; }

    /// <summary>With <see cref="ReplicaStatus.StaleEpoch"/>: the newest epoch the store has seen for the volume.</summary>
    public ulong ObservedEpoch { get; set; }

    /// <summary>With <see cref="ReplicaOperation.Read"/>: false when the extent was never written on this store (the
    /// data is zeros and no I/O was done).</summary>
    public bool Allocated { get; set; }

    /// <summary>Where a channel links the requests it holds.</summary>
    public ReplicaRequest? Next { get; set; }

    /// <summary>Clears everything but the handler, state and capacity.</summary>
    public void Reset()
    {
        Operation = ReplicaOperation.Read;
        VolumeId = 0;
        Extent = 0;
        Offset = 0;
        Length = 0;
        Device = 0;
        Epoch = 0;
        Argument = 0;
        Flags = BlockRequestFlags.None;
        Class = IoClass.Vm;
        Checksums = null;
        SegmentCount = 0;
        Status = ReplicaStatus.Ok;
        Result = 0;
        ObservedEpoch = 0;
        Allocated = false;
        Next = null;
    }

    /// <summary>Appends a segment and adds its length to <see cref="Length"/>.</summary>
    /// <param name="buffer">The memory.</param>
    /// <param name="length">Its length in bytes.</param>
    /// <exception cref="InvalidOperationException">The request is full.</exception>
    public void AddSegment(void* buffer, int length)
    {
        if (SegmentCount == _segmentCapacity)
        {
            throw new InvalidOperationException($"This replica request holds at most {_segmentCapacity} segments; create it with a larger capacity.");
        }

        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);
        ArgumentNullException.ThrowIfNull(buffer);
        _segments[SegmentCount++] = new BlockSegment((nint)buffer, length);
        Length += length;
    }

    /// <summary>Answers the request: sets the status and result and calls the handler.</summary>
    /// <param name="status">The status.</param>
    /// <param name="result">The result.</param>
    public void Complete(ReplicaStatus status, int result)
    {
        Status = status;
        Result = result;
        Handler?.OnReplicaCompleted(this);
    }

    /// <summary>Frees the segment array.</summary>
    public void Dispose()
    {
        if (_segments != null)
        {
            NativeMemory.Free(_segments);
            _segments = null;
        }

        GC.SuppressFinalize(this);
    }

    /// <summary>Frees the segment array if <see cref="Dispose"/> was not called.</summary>
    ~ReplicaRequest()
    {
        if (_segments != null)
        {
            NativeMemory.Free(_segments);
        }
    }
}
