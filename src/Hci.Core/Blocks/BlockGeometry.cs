namespace Hci.Core.Blocks;

/// <summary>The shape of a block device: what every request must respect.</summary>
/// <remarks>Requests are validated against it before they reach the device (see <see cref="BlockError"/>).</remarks>
public sealed record BlockGeometry
{
    /// <summary>Creates a geometry and checks that it is coherent.</summary>
    /// <param name="logicalBlockSize">Smallest unit of addressing, in bytes: a power of two from 512 to 65536.</param>
    /// <param name="capacity">Size of the device in bytes: a positive multiple of <paramref name="logicalBlockSize"/>.</param>
    /// <param name="maxTransferBytes">Largest read or write, in bytes: a multiple of <paramref name="logicalBlockSize"/>.</param>
    /// <param name="maxSegments">Largest number of buffer segments in one request.</param>
    /// <param name="bufferAlignment">Required alignment of every buffer address and segment length: 1 or a power of two.</param>
    /// <param name="queueCount">Number of independent queues the device serves well at once (a hint: more may be created).</param>
    public BlockGeometry(int logicalBlockSize, long capacity, int maxTransferBytes, int maxSegments, int bufferAlignment, int queueCount)
    {
        if (logicalBlockSize < 512 || logicalBlockSize > 65536 || !int.IsPow2(logicalBlockSize))
        {
            throw new ArgumentOutOfRangeException(nameof(logicalBlockSize), logicalBlockSize, "The logical block size must be a power of two from 512 to 65536 bytes.");
        }

        if (capacity <= 0 || capacity % logicalBlockSize != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(capacity), capacity, $"The capacity must be a positive multiple of the logical block size ({logicalBlockSize} bytes).");
        }

        if (maxTransferBytes < logicalBlockSize || maxTransferBytes % logicalBlockSize != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(maxTransferBytes), maxTransferBytes, $"The maximum transfer must be a positive multiple of the logical block size ({logicalBlockSize} bytes).");
        }

        if (maxSegments < 1 || maxSegments > BlockRequest.MaxSegmentsLimit)
        {
            throw new ArgumentOutOfRangeException(nameof(maxSegments), maxSegments, $"The maximum segment count must be from 1 to {BlockRequest.MaxSegmentsLimit}.");
        }

        if (bufferAlignment < 1 || !int.IsPow2(bufferAlignment))
        {
            throw new ArgumentOutOfRangeException(nameof(bufferAlignment), bufferAlignment, "The buffer alignment must be 1 or a power of two.");
        }

        if (queueCount < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(queueCount), queueCount, "The queue count must be at least 1.");
        }

        LogicalBlockSize = logicalBlockSize;
        Capacity = capacity;
        MaxTransferBytes = maxTransferBytes;
        MaxSegments = maxSegments;
        BufferAlignment = bufferAlignment;
        QueueCount = queueCount;
    }

    /// <summary>Smallest unit of addressing, in bytes; offsets and lengths are multiples of it.</summary>
    public int LogicalBlockSize { get; }

    /// <summary>Size of the device in bytes.</summary>
    public long Capacity { get; }

    /// <summary>Largest read or write, in bytes.</summary>
    public int MaxTransferBytes { get; }

    /// <summary>Largest number of buffer segments in one request.</summary>
    public int MaxSegments { get; }

    /// <summary>Required alignment of buffer addresses and segment lengths (the O_DIRECT rule); 1 when there is none.</summary>
    public int BufferAlignment { get; }

    /// <summary>Number of independent queues the device serves well at once.</summary>
    public int QueueCount { get; }

    /// <summary>
    /// Requests the device itself takes at once (Linux's <c>nr_requests</c>, its tags); 0 when unknown or unbounded.
    /// Past it the kernel holds requests back in its own order, and io_uring hands each one to a worker thread that
    /// waits for a tag: a scheduler keeps no more than this at the device, so that it, not the kernel, picks the order.
    /// </summary>
    public int DeviceQueueDepth { get; init; }

    /// <summary>Number of logical blocks.</summary>
    public long BlockCount => Capacity / LogicalBlockSize;
}
