using System.Buffers;
using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using Hci.Core.Buffers;

namespace Hci.Core.Blocks;

/// <summary>
/// A block device: geometry, capabilities, per-thread queues for the data path, and a thread-safe
/// asynchronous API for everything else.
/// </summary>
/// <remarks>
/// <para>The data path opens one <see cref="BlockQueue"/> per reactor thread with <see cref="CreateQueue"/>.
/// Control-plane code, tests and tools may instead call <see cref="ReadAsync"/>, <see cref="WriteAsync"/> and
/// the other asynchronous methods from any thread: they go through one internal reactor thread that the device
/// starts on first use. <see cref="ReadAsync"/> and <see cref="WriteAsync"/> take any memory: what the device cannot
/// take as it is they split into transfers the device takes, and copy through an aligned bounce buffer when the memory
/// is not aligned for O_DIRECT. The data path's queues take requests as they are.</para>
/// <para>Every request is checked against <see cref="Geometry"/> and <see cref="Capabilities"/> before it
/// reaches the device.</para>
/// </remarks>
public abstract class BlockDevice : IAsyncDisposable, IDisposable
{
    private const int BounceBufferBytes = 1 << 20;
    private const int MaxPooledBounceBuffers = 4;
    private readonly ConcurrentQueue<BlockRequest> _requestPool = new();
    private readonly ConcurrentQueue<AlignedBuffer> _bouncePool = new();
    private readonly Lock _reactorLock = new();
    private BlockReactor? _reactor;
    private int _openQueues;
    private int _disposed;
    private int _coreDisposed;

    /// <summary>Creates the device.</summary>
    /// <param name="name">A name for messages and meters, such as the path.</param>
    /// <param name="geometry">The device's geometry.</param>
    /// <param name="capabilities">What it supports besides read and write.</param>
    protected BlockDevice(string name, BlockGeometry geometry, BlockDeviceCapabilities capabilities)
    {
        Name = name ?? throw new ArgumentNullException(nameof(name));
        Geometry = geometry ?? throw new ArgumentNullException(nameof(geometry));
        Capabilities = capabilities;
    }

    /// <summary>The device's name (a path, or a kind for devices without one).</summary>
    public string Name { get; }

    /// <summary>What requests must respect.</summary>
    public BlockGeometry Geometry { get; }

    /// <summary>What the device supports besides read and write.</summary>
    public BlockDeviceCapabilities Capabilities { get; }

    /// <summary>Which engine carries the I/O, such as "io_uring" or "memory".</summary>
    public abstract string Engine { get; }

    /// <summary>True when the device supports everything in <paramref name="capabilities"/>.</summary>
    /// <param name="capabilities">The capabilities to check.</param>
    /// <returns>Whether all are supported.</returns>
    public bool Supports(BlockDeviceCapabilities capabilities) => (Capabilities & capabilities) == capabilities;

    /// <summary>Opens a queue for the calling thread's exclusive use.</summary>
    /// <param name="depth">Requests the queue keeps in flight at the device at once (more are held, not refused).</param>
    /// <returns>The queue; dispose it before the device.</returns>
    public BlockQueue CreateQueue(int depth = 128)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        ArgumentOutOfRangeException.ThrowIfLessThan(depth, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(depth, 4096);
        var queue = CreateQueueCore(depth);
        Interlocked.Increment(ref _openQueues);
        return queue;
    }

    /// <summary>Checks a request against the geometry and capabilities.</summary>
    /// <param name="request">The request.</param>
    /// <param name="errno">The errno that answers a refusal, or 0.</param>
    /// <returns><see cref="BlockError.None"/>, or why the request is refused.</returns>
    public unsafe BlockError Validate(BlockRequest request, out int errno)
    {
        var g = Geometry;
        var op = request.Operation;
        errno = 0;
        if (op == BlockOperation.Flush)
        {
            if (request.SegmentCount != 0)
            {
                errno = Errno.EINVAL;
                return BlockError.BadSegments;
            }

            if (!Supports(BlockDeviceCapabilities.Flush))
            {
                errno = Errno.EOPNOTSUPP;
                return BlockError.Unsupported;
            }

            return BlockError.None;
        }

        if (op is not (BlockOperation.Read or BlockOperation.Write or BlockOperation.Discard or BlockOperation.WriteZeroes))
        {
            errno = Errno.EOPNOTSUPP;
            return BlockError.Unsupported;
        }

        if (op != BlockOperation.Read && Supports(BlockDeviceCapabilities.ReadOnly))
        {
            errno = Errno.EROFS;
            return BlockError.ReadOnly;
        }

        long offset = request.Offset;
        long length = request.Length;
        int lbsMask = g.LogicalBlockSize - 1;
        if (((offset | length) & lbsMask) != 0)
        {
            errno = Errno.EINVAL;
            return BlockError.Misaligned;
        }

        if (length <= 0 || offset < 0 || offset > g.Capacity || length > g.Capacity - offset)
        {
            errno = Errno.ERANGE;
            return BlockError.OutOfRange;
        }

        if (op is BlockOperation.Discard or BlockOperation.WriteZeroes)
        {
            var needed = op == BlockOperation.Discard ? BlockDeviceCapabilities.Discard : BlockDeviceCapabilities.WriteZeroes;
            if (!Supports(needed))
            {
                errno = Errno.EOPNOTSUPP;
                return BlockError.Unsupported;
            }

            if (request.SegmentCount != 0)
            {
                errno = Errno.EINVAL;
                return BlockError.BadSegments;
            }

            return BlockError.None;
        }

        if ((request.Flags & BlockRequestFlags.ForceUnitAccess) != 0 && (op != BlockOperation.Write || !Supports(BlockDeviceCapabilities.ForceUnitAccess)))
        {
            errno = Errno.EOPNOTSUPP;
            return BlockError.Unsupported;
        }

        if (length > g.MaxTransferBytes)
        {
            errno = Errno.EINVAL;
            return BlockError.TooLarge;
        }

        int count = request.SegmentCount;
        if (count == 0 || count > g.MaxSegments)
        {
            errno = Errno.EINVAL;
            return BlockError.BadSegments;
        }

        long sum = 0;
        nint alignMask = g.BufferAlignment - 1;
        var segments = request.SegmentPointer;
        for (int i = 0; i < count; i++)
        {
            var s = segments[i];
            if (((s.Address | s.Length) & alignMask) != 0)
            {
                errno = Errno.EINVAL;
                return BlockError.Misaligned;
            }

            sum += s.Length;
        }

        if (sum != length)
        {
            errno = Errno.EINVAL;
            return BlockError.BadSegments;
        }

        return BlockError.None;
    }

    /// <summary>
    /// Submits a prepared request through the device's shared reactor and completes when it has; safe from any thread.
    /// </summary>
    /// <param name="request">An idle request without a <see cref="BlockRequest.Handler"/>; its buffers stay valid until completion.</param>
    /// <param name="cancellationToken">Checked before submission; a submitted request cannot be withdrawn.</param>
    /// <returns>The request's <see cref="BlockRequest.Result"/>: bytes transferred or a negative errno.</returns>
    public ValueTask<int> ExecuteAsync(BlockRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (request.Handler != null)
        {
            throw new ArgumentException("A request with a completion handler belongs to a queue; submit it there.", nameof(request));
        }

        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<int>(cancellationToken);
        }

        var task = request.PrepareAwait();
        GetReactor().Post(request);
        return task;
    }

    /// <summary>Reads <paramref name="buffer"/>.Length bytes at <paramref name="offset"/>.</summary>
    /// <param name="offset">Byte offset, a multiple of the logical block size.</param>
    /// <param name="buffer">
    /// Destination, any memory; its length is a multiple of the logical block size. A buffer aligned as
    /// <see cref="BlockGeometry.BufferAlignment"/> requires (such as an <see cref="Buffers.AlignedBuffer"/>) and no
    /// longer than <see cref="BlockGeometry.MaxTransferBytes"/> goes to the device as it is; any other is read
    /// through an aligned bounce buffer, in pieces of at most the maximum transfer, and copied.
    /// </param>
    /// <param name="cancellationToken">Checked before submission.</param>
    /// <returns>A task that completes when the data is in the buffer.</returns>
    /// <exception cref="ArgumentException"><paramref name="offset"/> or the buffer's length is not a multiple of the logical block size.</exception>
    /// <exception cref="BlockDeviceException">The request was refused or failed; its errno says why.</exception>
    public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        CheckBlockMultiples(offset, buffer.Length);
        bool aligned = IsAligned(buffer);
        return aligned && buffer.Length <= Geometry.MaxTransferBytes
            ? TransferAsync(BlockOperation.Read, offset, buffer, BlockRequestFlags.None, cancellationToken)
            : TransferInPiecesAsync(BlockOperation.Read, offset, buffer, aligned, BlockRequestFlags.None, cancellationToken);
    }

    /// <summary>Writes <paramref name="buffer"/> at <paramref name="offset"/>.</summary>
    /// <param name="offset">Byte offset, a multiple of the logical block size.</param>
    /// <param name="buffer">
    /// Source, any memory; its length is a multiple of the logical block size. A buffer aligned as
    /// <see cref="BlockGeometry.BufferAlignment"/> requires and no longer than
    /// <see cref="BlockGeometry.MaxTransferBytes"/> goes to the device as it is; any other is copied into an aligned
    /// bounce buffer and written in pieces of at most the maximum transfer (not atomically as a whole).
    /// </param>
    /// <param name="flags">For example <see cref="BlockRequestFlags.ForceUnitAccess"/> (applies to every piece).</param>
    /// <param name="cancellationToken">Checked before submission.</param>
    /// <returns>A task that completes when the device has acknowledged the write.</returns>
    /// <exception cref="ArgumentException"><paramref name="offset"/> or the buffer's length is not a multiple of the logical block size.</exception>
    /// <exception cref="BlockDeviceException">The request was refused or failed; its errno says why.</exception>
    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> buffer, BlockRequestFlags flags = BlockRequestFlags.None, CancellationToken cancellationToken = default)
    {
        CheckBlockMultiples(offset, buffer.Length);
        var memory = System.Runtime.InteropServices.MemoryMarshal.AsMemory(buffer);
        bool aligned = IsAligned(memory);
        return aligned && memory.Length <= Geometry.MaxTransferBytes
            ? TransferAsync(BlockOperation.Write, offset, memory, flags, cancellationToken)
            : TransferInPiecesAsync(BlockOperation.Write, offset, memory, aligned, flags, cancellationToken);
    }

    /// <summary>Makes every completed write durable.</summary>
    /// <param name="cancellationToken">Checked before submission.</param>
    /// <returns>A task that completes when the device has flushed.</returns>
    /// <exception cref="BlockDeviceException">Refused (no flush support) or failed.</exception>
    public ValueTask FlushAsync(CancellationToken cancellationToken = default)
        => RangeAsync(BlockOperation.Flush, 0, 0, cancellationToken);

    /// <summary>Discards a range.</summary>
    /// <param name="offset">Byte offset, a multiple of the logical block size.</param>
    /// <param name="length">Byte length, a multiple of the logical block size.</param>
    /// <param name="cancellationToken">Checked before submission.</param>
    /// <returns>A task that completes when the device has discarded the range.</returns>
    /// <exception cref="BlockDeviceException">Refused or failed.</exception>
    public ValueTask DiscardAsync(long offset, long length, CancellationToken cancellationToken = default)
        => RangeAsync(BlockOperation.Discard, offset, length, cancellationToken);

    /// <summary>Makes a range read back as zeroes.</summary>
    /// <param name="offset">Byte offset, a multiple of the logical block size.</param>
    /// <param name="length">Byte length, a multiple of the logical block size.</param>
    /// <param name="cancellationToken">Checked before submission.</param>
    /// <returns>A task that completes when the range reads as zeroes.</returns>
    /// <exception cref="BlockDeviceException">Refused or failed.</exception>
    public ValueTask WriteZeroesAsync(long offset, long length, CancellationToken cancellationToken = default)
        => RangeAsync(BlockOperation.WriteZeroes, offset, length, cancellationToken);

    /// <summary>Stops the shared reactor (after its requests complete) and closes the device.</summary>
    /// <returns>A task that completes when the device is closed.</returns>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        BlockReactor? reactor;
        lock (_reactorLock)
        {
            reactor = _reactor;
            _reactor = null;
        }

        if (reactor != null)
        {
            await reactor.StopAsync().ConfigureAwait(false);
        }

        while (_requestPool.TryDequeue(out var request))
        {
            request.Dispose();
        }

        while (_bouncePool.TryDequeue(out var bounce))
        {
            ((IDisposable)bounce).Dispose();
        }

        TryDisposeCore();
        GC.SuppressFinalize(this);
    }

    /// <summary>Closes the device; waits for the shared reactor's requests.</summary>
    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();

    /// <summary>Creates a queue of the given depth for the data path.</summary>
    /// <param name="depth">Requests in flight at the device at once.</param>
    /// <returns>The queue.</returns>
    protected abstract BlockQueue CreateQueueCore(int depth);

    /// <summary>Releases the device's resources. Called once, when the device is disposed and its last queue has closed.</summary>
    protected abstract void DisposeCore();

    /// <summary>Number of queues open (the shared reactor's included).</summary>
    protected int OpenQueueCount => Volatile.Read(ref _openQueues);

    internal void OnQueueClosed()
    {
        if (Interlocked.Decrement(ref _openQueues) == 0 && Volatile.Read(ref _disposed) != 0)
        {
            TryDisposeCore();
        }
    }

    private void TryDisposeCore()
    {
        if (Volatile.Read(ref _openQueues) == 0 && Interlocked.Exchange(ref _coreDisposed, 1) == 0)
        {
            DisposeCore();
        }
    }

    /// <summary>The reactor behind the asynchronous API, if it has started (for tests).</summary>
    internal BlockReactor? ReactorForTests => Volatile.Read(ref _reactor);

    private BlockReactor GetReactor()
    {
        var reactor = Volatile.Read(ref _reactor);
        if (reactor != null)
        {
            return reactor;
        }

        lock (_reactorLock)
        {
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
            return _reactor ??= new BlockReactor(this);
        }
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask RangeAsync(BlockOperation operation, long offset, long length, CancellationToken cancellationToken)
    {
        var request = RentRequest();
        try
        {
            request.SetRange(operation, offset, length);
            await ExecuteAsync(request, cancellationToken).ConfigureAwait(false);
            ThrowIfFailed(request);
        }
        finally
        {
            ReturnRequest(request);
        }
    }

    private void CheckBlockMultiples(long offset, int length)
    {
        int lbs = Geometry.LogicalBlockSize;
        if ((offset & (lbs - 1)) != 0)
        {
            throw new ArgumentException($"The offset {offset} is not a multiple of the logical block size of '{Name}' ({lbs} bytes).", nameof(offset));
        }

        if ((length & (lbs - 1)) != 0)
        {
            throw new ArgumentException($"The buffer's length {length} is not a multiple of the logical block size of '{Name}' ({lbs} bytes).", "buffer");
        }
    }

    /// <summary>True when the buffer's address and length are aligned as the device requires.</summary>
    private unsafe bool IsAligned(Memory<byte> buffer)
    {
        nint mask = Geometry.BufferAlignment - 1;
        if (mask == 0 || buffer.Length == 0)
        {
            return true;
        }

        using var pin = buffer.Pin();
        return (((nint)pin.Pointer | buffer.Length) & mask) == 0;
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask TransferAsync(BlockOperation operation, long offset, Memory<byte> buffer, BlockRequestFlags flags, CancellationToken cancellationToken)
    {
        var request = RentRequest();
        try
        {
            PrepareBufferRequest(request, operation, offset, buffer, flags);
            await ExecuteAsync(request, cancellationToken).ConfigureAwait(false);
            ThrowIfFailed(request);
        }
        finally
        {
            ReturnRequest(request);
        }
    }

    /// <summary>
    /// The convenience path for memory the device cannot take as it is: pieces of at most one transfer, each sent as it
    /// is when the memory is aligned (it was only too long), or else copied through an aligned buffer from the
    /// device's small pool. Never used by queues.
    /// </summary>
    private async ValueTask TransferInPiecesAsync(BlockOperation operation, long offset, Memory<byte> buffer, bool aligned, BlockRequestFlags flags, CancellationToken cancellationToken)
    {
        // The whole range first, as one request would be checked: a write past the end must not land its first pieces.
        var g = Geometry;
        if (offset < 0 || offset > g.Capacity || buffer.Length > g.Capacity - offset)
        {
            throw new BlockDeviceException(Name, operation, offset, buffer.Length, BlockError.OutOfRange, Errno.ERANGE);
        }

        if (operation == BlockOperation.Write && Supports(BlockDeviceCapabilities.ReadOnly))
        {
            throw new BlockDeviceException(Name, operation, offset, buffer.Length, BlockError.ReadOnly, Errno.EROFS);
        }

        var bounce = aligned ? null : RentBounceBuffer();
        try
        {
            int unit = Math.Max(g.LogicalBlockSize, g.BufferAlignment);
            int piece = bounce?.Length ?? Math.Max(g.MaxTransferBytes / unit * unit, g.LogicalBlockSize);
            for (long done = 0; done < buffer.Length; done += piece)
            {
                int length = (int)Math.Min(piece, buffer.Length - done);
                var user = buffer.Slice((int)done, length);
                if (aligned)
                {
                    await TransferAsync(operation, checked(offset + done), user, flags, cancellationToken).ConfigureAwait(false);
                    continue;
                }

                var copy = bounce!.Memory[..length];
                if (operation == BlockOperation.Write)
                {
                    user.Span.CopyTo(copy.Span);
                }

                await TransferAsync(operation, checked(offset + done), copy, flags, cancellationToken).ConfigureAwait(false);
                if (operation == BlockOperation.Read)
                {
                    copy.Span.CopyTo(user.Span);
                }
            }
        }
        finally
        {
            if (bounce != null)
            {
                ReturnBounceBuffer(bounce);
            }
        }
    }

    private AlignedBuffer RentBounceBuffer()
    {
        if (_bouncePool.TryDequeue(out var buffer))
        {
            return buffer;
        }

        // One transfer, at most 1 MiB, a whole number of blocks and alignment units; aligned to a page at least.
        var g = Geometry;
        int unit = Math.Max(g.LogicalBlockSize, g.BufferAlignment);
        int length = Math.Min(g.MaxTransferBytes, BounceBufferBytes) / unit * unit;
        return new AlignedBuffer(Math.Max(length, g.LogicalBlockSize), Math.Max(g.BufferAlignment, 4096));
    }

    private void ReturnBounceBuffer(AlignedBuffer buffer)
    {
        if (_bouncePool.Count < MaxPooledBounceBuffers && Volatile.Read(ref _disposed) == 0)
        {
            _bouncePool.Enqueue(buffer);
            if (Volatile.Read(ref _disposed) != 0)
            {
                // Disposal emptied the pool between the check and the enqueue: empty it again (the buffer is native memory).
                while (_bouncePool.TryDequeue(out var late))
                {
                    ((IDisposable)late).Dispose();
                }
            }
        }
        else
        {
            ((IDisposable)buffer).Dispose();
        }
    }

    private static unsafe void PrepareBufferRequest(BlockRequest request, BlockOperation operation, long offset, Memory<byte> buffer, BlockRequestFlags flags)
    {
        request.Reset();
        request.Operation = operation;
        request.Offset = offset;
        request.Flags = flags;
        if (buffer.Length == 0)
        {
            return; // refused as out of range by validation
        }

        var pin = buffer.Pin();
        request.AddSegment(pin.Pointer, buffer.Length);
        request.AttachPin(pin);
    }

    private void ThrowIfFailed(BlockRequest request)
    {
        var exception = request.ToException(Name);
        if (exception != null)
        {
            throw exception;
        }
    }

    private BlockRequest RentRequest()
    {
        if (_requestPool.TryDequeue(out var request))
        {
            return request;
        }

        return new BlockRequest(1);
    }

    private void ReturnRequest(BlockRequest request)
    {
        if (request.IsInFlight)
        {
            return; // never reuse a request the device still holds
        }

        request.UserState = null;
        if (_requestPool.Count < 256 && Volatile.Read(ref _disposed) == 0)
        {
            _requestPool.Enqueue(request);
        }
        else
        {
            request.Dispose();
        }
    }
}
