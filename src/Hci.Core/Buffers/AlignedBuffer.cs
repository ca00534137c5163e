using System.Buffers;
using System.Runtime.InteropServices;

namespace Hci.Core.Buffers;

/// <summary>
/// Native memory aligned for direct I/O (NativeMemory.AlignedAlloc), usable as <see cref="Memory{T}"/>
/// without pinning cost; either owned, or a slice of an <see cref="AlignedBufferPool"/>'s slab.
/// </summary>
public sealed unsafe class AlignedBuffer : MemoryManager<byte>
{
    private readonly AlignedBufferPool? _pool;
    private byte* _pointer;

    /// <summary>Allocates an owned, zeroed buffer.</summary>
    /// <param name="length">Bytes, positive.</param>
    /// <param name="alignment">A power of two; 4096 (a page) suits every device.</param>
    public AlignedBuffer(int length, int alignment = 4096)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);
        if (alignment < 1 || !int.IsPow2(alignment))
        {
            throw new ArgumentOutOfRangeException(nameof(alignment), alignment, "The alignment must be a power of two.");
        }

        _pointer = (byte*)NativeMemory.AlignedAlloc((nuint)length, (nuint)alignment);
        NativeMemory.Clear(_pointer, (nuint)length);
        Length = length;
    }

    internal AlignedBuffer(AlignedBufferPool pool, byte* pointer, int length, int index)
    {
        _pool = pool;
        _pointer = pointer;
        Length = length;
        Index = index;
    }

    /// <summary>Start of the buffer.</summary>
    public byte* Pointer => _pointer;

    /// <summary>Length in bytes.</summary>
    public int Length { get; }

    /// <summary>The buffer's bytes.</summary>
    public Span<byte> Span => new(_pointer, Length);

    /// <summary>The pool it came from, or null for an owned buffer.</summary>
    public AlignedBufferPool? Pool => _pool;

    internal int Index { get; }

    internal bool Rented;

    /// <inheritdoc/>
    public override Span<byte> GetSpan()
    {
        ObjectDisposedException.ThrowIf(_pointer == null, this);
        return new Span<byte>(_pointer, Length);
    }

    /// <inheritdoc/>
    public override MemoryHandle Pin(int elementIndex = 0)
    {
        ObjectDisposedException.ThrowIf(_pointer == null, this);
        ArgumentOutOfRangeException.ThrowIfNegative(elementIndex);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(elementIndex, Length);
        return new MemoryHandle(_pointer + elementIndex);
    }

    /// <inheritdoc/>
    public override void Unpin()
    {
    }

    /// <summary>Returns a pooled buffer to its pool; frees an owned one.</summary>
    /// <param name="disposing">True from Dispose.</param>
    protected override void Dispose(bool disposing)
    {
        if (_pool != null)
        {
            if (disposing)
            {
                _pool.Return(this);
            }

            return;
        }

        if (_pointer != null)
        {
            NativeMemory.AlignedFree(_pointer);
            _pointer = null;
        }
    }
}
