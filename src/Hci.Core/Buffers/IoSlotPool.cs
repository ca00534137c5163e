namespace Hci.Core.Buffers;

/// <summary>
/// The per-I/O slots of one front-end instance (a connection, a ring set, a bench job): a free stack, a slot limit,
/// buffers grown to fit a command and counted against a byte budget. Owned by one thread (a reactor); nothing is
/// allocated once the slots and their buffers exist, so the data path's steady state allocates nothing.
/// </summary>
/// <typeparam name="TSlot">The front-end's slot type.</typeparam>
/// <remarks>
/// <see cref="Take"/> prefers the most recently freed slot whose buffer is big enough (among the last few, so that
/// hot buffers stay hot), then makes a new slot while under <see cref="MaxSlots"/>, then grows the last freed slot's
/// buffer. A buffer that would break the pool's or the shared budget first makes idle slots give back theirs; if the
/// bytes still do not fit, <see cref="Take"/> answers null: the front-end's "busy" answer (TASK SET FULL, a request
/// left in the ring), never an exception.
/// </remarks>
public sealed class IoSlotPool<TSlot> : IDisposable
    where TSlot : IoSlot
{
    private const int Scan = 8;
    private const int MinBuffer = 4096;

    private readonly Func<TSlot> _factory;
    private readonly IoBufferBudget? _shared;
    private readonly List<TSlot> _all;
    private readonly TSlot?[] _free;
    private int _freeCount;
    private long _bufferedBytes;
    private bool _disposed;

    /// <summary>Makes an empty pool; slots are made on demand, up to <paramref name="maxSlots"/>.</summary>
    /// <param name="factory">Makes a slot (called at most <paramref name="maxSlots"/> times).</param>
    /// <param name="maxSlots">Most slots; 1 to 65536.</param>
    /// <param name="maxBufferedBytes">Most bytes of buffers this pool holds.</param>
    /// <param name="shared">A budget shared with other pools, or null.</param>
    public IoSlotPool(Func<TSlot> factory, int maxSlots, long maxBufferedBytes, IoBufferBudget? shared = null)
    {
        ArgumentNullException.ThrowIfNull(factory);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxSlots, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(maxSlots, 65536);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxBufferedBytes);
        _factory = factory;
        _shared = shared;
        MaxSlots = maxSlots;
        MaxBufferedBytes = maxBufferedBytes;
        _all = new List<TSlot>(Math.Min(maxSlots, 256));
        _free = new TSlot?[maxSlots];
    }

    /// <summary>Most slots.</summary>
    public int MaxSlots { get; }

    /// <summary>Most bytes of buffers this pool holds.</summary>
    public long MaxBufferedBytes { get; }

    /// <summary>Slots made so far.</summary>
    public int Count => _all.Count;

    /// <summary>Slots taken now.</summary>
    public int InUse => _all.Count - _freeCount;

    /// <summary>Bytes of buffers held now (in use and idle).</summary>
    public long BufferedBytes => _bufferedBytes;

    /// <summary>Every slot made so far (for a shutdown that must look at the ones in use).</summary>
    public IReadOnlyList<TSlot> All => _all;

    /// <summary>Takes a slot whose buffer holds at least <paramref name="bytes"/> (0 for none needed).</summary>
    /// <param name="bytes">Bytes the command transfers through the slot's buffer.</param>
    /// <returns>The slot, or null when every slot is taken or the bytes do not fit the budgets.</returns>
    public TSlot? Take(int bytes)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        TSlot? slot = null;
        int end = _freeCount - 1;
        for (int i = end; i >= 0 && i >= end - Scan; i--)
        {
            if (_free[i]!.Capacity >= bytes)
            {
                slot = _free[i];
                _free[i] = _free[end];
                _free[end] = null;
                _freeCount--;
                break;
            }
        }

        if (slot == null && _all.Count < MaxSlots)
        {
            slot = _factory();
            _all.Add(slot);
        }
        else if (slot == null && end >= 0)
        {
            slot = _free[end];
            _free[end] = null;
            _freeCount--;
        }

        if (slot == null)
        {
            return null;
        }

        if (bytes > slot.Capacity && !Grow(slot, bytes))
        {
            _free[_freeCount++] = slot;
            return null;
        }

        slot.InUse = true;
        return slot;
    }

    /// <summary>Gives a slot back (its buffer stays with it for the next command).</summary>
    /// <param name="slot">A slot from <see cref="Take"/>.</param>
    public void Return(TSlot slot)
    {
        ArgumentNullException.ThrowIfNull(slot);
        if (!slot.InUse)
        {
            throw new InvalidOperationException("The slot was given back twice.");
        }

        slot.InUse = false;
        slot.ResetForPool();
        if (_disposed)
        {
            FreeBuffer(slot);
            return;
        }

        _free[_freeCount++] = slot;
    }

    /// <summary>Frees every idle slot's buffer now; slots in use free theirs when given back.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        for (int i = 0; i < _freeCount; i++)
        {
            FreeBuffer(_free[i]!);
            _free[i] = null;
        }

        _freeCount = 0;
    }

    private bool Grow(TSlot slot, int bytes)
    {
        long size = Math.Max(MinBuffer, (long)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)bytes));
        size = Math.Min(size, int.MaxValue - 4095L);
        size = Math.Max(size, ((long)bytes + 4095) & ~4095L);
        long more = size - slot.Capacity;
        if (!Reserve(more))
        {
            // Idle slots give back their buffers first.
            for (int i = 0; i < _freeCount; i++)
            {
                FreeBuffer(_free[i]!);
            }

            if (!Reserve(more))
            {
                return false;
            }
        }

        ((IDisposable?)slot.Buffer)?.Dispose();
        slot.Buffer = new AlignedBuffer((int)size);
        return true;
    }

    private bool Reserve(long bytes)
    {
        if (_bufferedBytes + bytes > MaxBufferedBytes || (_shared != null && !_shared.TryReserve(bytes)))
        {
            return false;
        }

        _bufferedBytes += bytes;
        return true;
    }

    private void FreeBuffer(TSlot slot)
    {
        if (slot.Buffer is { } buffer)
        {
            _bufferedBytes -= buffer.Length;
            _shared?.Release(buffer.Length);
            slot.Buffer = null;
            ((IDisposable)buffer).Dispose();
        }
    }
}
