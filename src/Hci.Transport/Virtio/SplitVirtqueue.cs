namespace Hci.Transport.Virtio;

/// <summary>
/// The device side of a split virtqueue (virtio 1.x, 2.7): pops available chains, walks and checks them, and
/// returns them on the used ring. The rings live in guest memory, which the guest may change at any time: every
/// field is read once into a local, every index is range-checked and every buffer translated through
/// <see cref="GuestMemory"/>, so nothing the guest writes can make it touch memory outside the guest's regions.
/// </summary>
internal sealed unsafe class SplitVirtqueue
{
    /// <summary>Largest queue size virtio allows.</summary>
    public const int MaxSize = 32768;

    /// <summary>Largest indirect table accepted, in descriptors.</summary>
    public const int MaxIndirect = 1024;

    private readonly GuestMemory _memory;
    private readonly VirtqDescriptor* _descriptors;
    private readonly byte* _avail;
    private readonly byte* _used;
    private readonly bool _eventIdx;
    private ushort _lastAvail;
    private ushort _usedIdx;
    private ushort _lastSignalledUsed;
    private bool _signalledValid;

    /// <summary>Attaches to rings already translated to host pointers.</summary>
    /// <param name="memory">The guest's memory table, for buffer addresses.</param>
    /// <param name="size">Queue size: a power of two up to 32768.</param>
    /// <param name="descriptors">The descriptor table (16 bytes each).</param>
    /// <param name="avail">The available ring.</param>
    /// <param name="used">The used ring.</param>
    /// <param name="lastAvail">Where to resume reading the available ring (VHOST_USER_SET_VRING_BASE).</param>
    /// <param name="eventIdx">VIRTIO_RING_F_EVENT_IDX was negotiated.</param>
    public SplitVirtqueue(GuestMemory memory, int size, nint descriptors, nint avail, nint used, ushort lastAvail = 0, bool eventIdx = false)
    {
        ArgumentNullException.ThrowIfNull(memory);
        if (size < 1 || size > MaxSize || !int.IsPow2(size))
        {
            throw new ArgumentOutOfRangeException(nameof(size), size, "A split virtqueue's size is a power of two from 1 to 32768.");
        }

        if (descriptors == 0 || avail == 0 || used == 0)
        {
            throw new ArgumentException("Ring addresses must be translated host pointers.");
        }

        _memory = memory;
        Size = size;
        _descriptors = (VirtqDescriptor*)descriptors;
        _avail = (byte*)avail;
        _used = (byte*)used;
        _eventIdx = eventIdx;
        _lastAvail = lastAvail;
        _usedIdx = Volatile.Read(ref *SplitRing.UsedIndex(_used));
    }

    /// <summary>Queue size.</summary>
    public int Size { get; }

    /// <summary>Index of the next available entry to read (saved for VHOST_USER_GET_VRING_BASE).</summary>
    public ushort LastAvailIndex => _lastAvail;

    /// <summary>Bytes of the descriptor table, available ring and used ring for a queue of <paramref name="size"/>.</summary>
    /// <param name="size">Queue size.</param>
    /// <returns>The three sizes, event fields included.</returns>
    public static (ulong Descriptors, ulong Avail, ulong Used) RingSizes(int size) => SplitRing.Sizes(size);

    /// <summary>Number of chains the guest has made available and this side has not popped.</summary>
    /// <returns>The count; a guest claiming more than the queue size is clamped to it.</returns>
    public int Pending()
    {
        ushort idx = Volatile.Read(ref *SplitRing.AvailIndex(_avail));
        int pending = (ushort)(idx - _lastAvail);
        return Math.Min(pending, Size);
    }

    /// <summary>Takes the next available chain's head index.</summary>
    /// <param name="head">The head; check it with <see cref="WalkChain"/> before use.</param>
    /// <returns>False when nothing is available.</returns>
    public bool TryPop(out ushort head)
    {
        ushort idx = Volatile.Read(ref *SplitRing.AvailIndex(_avail));
        if (idx == _lastAvail)
        {
            head = 0;
            return false;
        }

        // Acquire: the ring entry and the descriptors are read after the index.
        head = Volatile.Read(ref *SplitRing.AvailEntry(_avail, _lastAvail & (Size - 1)));
        _lastAvail++;
        return true;
    }

    /// <summary>Walks a chain, translating and checking every buffer.</summary>
    /// <param name="head">The head index from <see cref="TryPop"/>.</param>
    /// <param name="segments">Receives the buffers in chain order.</param>
    /// <param name="count">How many were written.</param>
    /// <returns><see cref="ChainStatus.Ok"/>, or why the chain must be failed.</returns>
    public ChainStatus WalkChain(ushort head, Span<ChainSegment> segments, out int count)
    {
        count = 0;
        if (head >= Size)
        {
            return ChainStatus.BadIndex;
        }

        bool seenWritable = false;
        VirtqDescriptor* table = _descriptors;
        int tableSize = Size;
        int index = head;
        int steps = 0;
        bool inIndirect = false;
        while (true)
        {
            if (++steps > tableSize)
            {
                return ChainStatus.Loop;
            }

            VirtqDescriptor d = table[index]; // one copy: the guest may rewrite the table meanwhile
            if ((d.Flags & SplitRing.DescriptorIndirect) != 0)
            {
                if (inIndirect || (d.Flags & SplitRing.DescriptorNext) != 0 || d.Length == 0 || d.Length % 16 != 0 || d.Length / 16 > MaxIndirect)
                {
                    return ChainStatus.BadIndirect;
                }

                if (!_memory.TryTranslate(d.Address, d.Length, out nint indirect))
                {
                    return ChainStatus.OutOfBounds;
                }

                table = (VirtqDescriptor*)indirect;
                tableSize = (int)(d.Length / 16);
                index = 0;
                steps = 0;
                inIndirect = true;
                continue;
            }

            bool writable = (d.Flags & SplitRing.DescriptorWrite) != 0;
            if (!writable && seenWritable)
            {
                return ChainStatus.BadOrder;
            }

            seenWritable |= writable;
            if (d.Length != 0)
            {
                if (!_memory.TryTranslate(d.Address, d.Length, out nint pointer))
                {
                    return ChainStatus.OutOfBounds;
                }

                if (count == segments.Length)
                {
                    return ChainStatus.TooManySegments;
                }

                segments[count++] = new ChainSegment(pointer, d.Length, writable);
            }

            if ((d.Flags & SplitRing.DescriptorNext) == 0)
            {
                return ChainStatus.Ok;
            }

            index = d.Next;
            if (index >= tableSize)
            {
                return ChainStatus.BadIndex;
            }
        }
    }

    /// <summary>Returns a chain to the guest on the used ring.</summary>
    /// <param name="head">The chain's head index.</param>
    /// <param name="written">Bytes the device wrote into the chain's writable buffers.</param>
    public void PushUsed(ushort head, uint written)
    {
        var entry = SplitRing.UsedEntry(_used, _usedIdx & (Size - 1));
        entry->Id = head;
        entry->Length = written;

        // Release: the entry is visible before the index that publishes it.
        _usedIdx++;
        Volatile.Write(ref *SplitRing.UsedIndex(_used), _usedIdx);
    }

    /// <summary>
    /// Whether the guest wants an interrupt for what was pushed since the last one: with EVENT_IDX, only when
    /// the used index crossed the guest's used_event (so a batch costs one interrupt); otherwise unless the guest
    /// set VRING_AVAIL_F_NO_INTERRUPT.
    /// </summary>
    /// <returns>True to signal the call eventfd.</returns>
    public bool NeedsInterrupt()
    {
        Interlocked.MemoryBarrier(); // the used index store before reading the guest's event field
        if (!_eventIdx)
        {
            return (Volatile.Read(ref *SplitRing.AvailFlags(_avail)) & SplitRing.AvailNoInterrupt) == 0;
        }

        ushort usedEvent = Volatile.Read(ref *SplitRing.UsedEvent(_avail, Size));
        ushort newIdx = _usedIdx;
        ushort oldIdx = _lastSignalledUsed;
        bool valid = _signalledValid;
        _lastSignalledUsed = newIdx;
        _signalledValid = true;
        return !valid || SplitRing.NeedEvent(usedEvent, newIdx, oldIdx);
    }

    /// <summary>The used index this side has published.</summary>
    public ushort UsedIndex => _usedIdx;

    /// <summary>
    /// After draining the available ring: asks the guest to kick for the next chain (with EVENT_IDX, by moving
    /// avail_event to where reading stopped), then looks again, closing the race with a chain published before
    /// the guest could see the request.
    /// </summary>
    /// <returns>True when a chain is already available (keep popping, no kick will come for it).</returns>
    public bool ArmKick()
    {
        if (_eventIdx)
        {
            Volatile.Write(ref *SplitRing.AvailEvent(_used, Size), _lastAvail);
        }
        else
        {
            Volatile.Write(ref *SplitRing.UsedFlags(_used), (ushort)0);
        }

        Interlocked.MemoryBarrier(); // the request to kick is visible before the index is read again
        return Volatile.Read(ref *SplitRing.AvailIndex(_avail)) != _lastAvail;
    }

    /// <summary>Asks the guest not to kick (true) or to kick again (false) for new available chains.</summary>
    /// <param name="suppress">Whether kicks are unwanted now.</param>
    public void SuppressKicks(bool suppress)
    {
        if (_eventIdx)
        {
            // avail_event: kick when the avail index passes this; far ahead suppresses, the current index re-enables.
            Volatile.Write(ref *SplitRing.AvailEvent(_used, Size), suppress ? (ushort)(_lastAvail - 1) : _lastAvail);
        }
        else
        {
            Volatile.Write(ref *SplitRing.UsedFlags(_used), suppress ? SplitRing.UsedNoNotify : (ushort)0);
        }

        Interlocked.MemoryBarrier();
    }
}
