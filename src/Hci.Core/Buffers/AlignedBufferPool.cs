using System.Runtime.InteropServices;
using Hci.Core.Blocks;

namespace Hci.Core.Buffers;

/// <summary>
/// A bounded pool of equal-size aligned buffers carved from one native slab, so that a device can register
/// the whole slab once (io_uring fixed buffers) and every buffer from it transfers without page pinning.
/// </summary>
/// <remarks>Renting never allocates; an empty pool answers false/null (backpressure), never grows.</remarks>
public sealed unsafe class AlignedBufferPool : IDisposable
{
    private readonly AlignedBuffer[] _buffers;
    private readonly int[] _free;
    private readonly Lock _lock = new();
    private byte* _slab;
    private int _freeCount;

    /// <summary>Allocates the slab and its buffers.</summary>
    /// <param name="bufferSize">Bytes per buffer: a positive multiple of <paramref name="alignment"/>.</param>
    /// <param name="count">Number of buffers.</param>
    /// <param name="alignment">Alignment of each buffer: a power of two, 4096 by default.</param>
    public AlignedBufferPool(int bufferSize, int count, int alignment = 4096)
    {
        if (alignment < 1 || !int.IsPow2(alignment))
        {
            throw new ArgumentOutOfRangeException(nameof(alignment), alignment, "The alignment must be a power of two.");
        }

        if (bufferSize <= 0 || bufferSize % alignment != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(bufferSize), bufferSize, $"The buffer size must be a positive multiple of the alignment ({alignment}).");
        }

        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(count);
        long total = (long)bufferSize * count;
        if (total > (1L << 30))
        {
            throw new ArgumentOutOfRangeException(nameof(count), count, "A pool's slab is limited to 1 GiB (the kernel's limit for one registered buffer); make several pools.");
        }

        _slab = (byte*)NativeMemory.AlignedAlloc((nuint)total, (nuint)Math.Max(alignment, 4096));
        NativeMemory.Clear(_slab, (nuint)total);
        BufferSize = bufferSize;
        Count = count;
        _buffers = new AlignedBuffer[count];
        _free = new int[count];
        for (int i = 0; i < count; i++)
        {
            _buffers[i] = new AlignedBuffer(this, _slab + ((long)i * bufferSize), bufferSize, i);
            _free[i] = count - 1 - i;
        }

        _freeCount = count;
    }

    /// <summary>Bytes per buffer.</summary>
    public int BufferSize { get; }

    /// <summary>Number of buffers.</summary>
    public int Count { get; }

    /// <summary>Buffers free now.</summary>
    public int Available => Volatile.Read(ref _freeCount);

    /// <summary>The whole slab, for registration with a device.</summary>
    public BlockSegment Slab => new((nint)_slab, (nint)((long)BufferSize * Count));

    /// <summary>Takes a buffer; null when all are rented (the pool never grows).</summary>
    /// <returns>A buffer, or null.</returns>
    public AlignedBuffer? TryRent()
    {
        ObjectDisposedException.ThrowIf(_slab == null, this);
        lock (_lock)
        {
            if (_freeCount == 0)
            {
                return null;
            }

            var buffer = _buffers[_free[--_freeCount]];
            buffer.Rented = true;
            return buffer;
        }
    }

    /// <summary>Takes a buffer.</summary>
    /// <returns>A buffer.</returns>
    /// <exception cref="InvalidOperationException">The pool is exhausted.</exception>
    public AlignedBuffer Rent() => TryRent() ?? throw new InvalidOperationException($"All {Count} buffers of this pool are in use; return some or make the pool larger.");

    /// <summary>Gives a buffer back. Returning twice, or a buffer of another pool, is an error.</summary>
    /// <param name="buffer">A buffer rented from this pool.</param>
    public void Return(AlignedBuffer buffer)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        if (buffer.Pool != this)
        {
            throw new ArgumentException("The buffer belongs to another pool.", nameof(buffer));
        }

        lock (_lock)
        {
            if (!buffer.Rented)
            {
                throw new InvalidOperationException("The buffer was returned twice.");
            }

            buffer.Rented = false;
            _free[_freeCount++] = buffer.Index;
        }
    }

    /// <summary>Frees the slab. Buffers still rented must no longer be used.</summary>
    public void Dispose()
    {
        if (_slab != null)
        {
            NativeMemory.AlignedFree(_slab);
            _slab = null;
        }
    }
}
