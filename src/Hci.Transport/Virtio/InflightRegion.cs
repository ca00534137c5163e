using System.Runtime.InteropServices;

namespace Hci.Transport.Virtio;

/// <summary>
/// One virtqueue's in-flight record in memory shared with the front-end (vhost-user INFLIGHT_SHMFD), laid out as
/// libvhost-user lays out split queues: a 16-byte header (features, version, desc_num, last_batch_head, used_idx)
/// then 16 bytes per descriptor head (inflight flag, next, fetch counter). The front-end keeps the memory across
/// a back-end restart, so the new back-end learns exactly which requests it had taken and not answered, and runs
/// them again, in the order it had fetched them.
/// </summary>
/// <remarks>
/// Every completion goes through three steps that a crash may interrupt anywhere: note the head as the last
/// batch, publish it on the used ring, clear its flag and copy the used index. <see cref="Recover"/> repairs the
/// one step that can be left half done.
/// </remarks>
internal sealed unsafe class InflightRegion
{
    /// <summary>Bytes of the header before the descriptor states.</summary>
    public const int HeaderSize = 16;

    /// <summary>Bytes per descriptor state.</summary>
    public const int DescriptorSize = 16;

    /// <summary>Queue regions are padded to this.</summary>
    public const int Alignment = 64;

    private readonly Header* _header;
    private readonly DescState* _desc;
    private readonly int _size;
    private ulong _counter;

    /// <summary>Attaches to a queue's region and initializes it if it is new (version 0).</summary>
    /// <param name="region">Start of the region: <see cref="QueueRegionSize"/> bytes, inside the shared mapping.</param>
    /// <param name="queueSize">Queue size.</param>
    public InflightRegion(nint region, int queueSize)
    {
        _header = (Header*)region;
        _desc = (DescState*)(region + HeaderSize);
        _size = queueSize;
        if (_header->Version != 1 || _header->DescNum != queueSize)
        {
            new Span<byte>((void*)region, checked((int)QueueRegionSize(queueSize))).Clear();
            _header->Version = 1;
            _header->DescNum = (ushort)queueSize;
        }

        for (int i = 0; i < queueSize; i++)
        {
            _counter = Math.Max(_counter, _desc[i].Counter);
        }
    }

    /// <summary>Bytes one queue of <paramref name="queueSize"/> takes, padded.</summary>
    /// <param name="queueSize">Queue size.</param>
    /// <returns>The size.</returns>
    public static long QueueRegionSize(int queueSize) => (HeaderSize + ((long)DescriptorSize * queueSize) + Alignment - 1) / Alignment * Alignment;

    /// <summary>Marks a head as taken from the available ring.</summary>
    /// <param name="head">The head.</param>
    public void Fetched(ushort head)
    {
        if (head >= _size)
        {
            return;
        }

        ref var d = ref _desc[head];
        d.Counter = ++_counter;
        Volatile.Write(ref d.Inflight, (byte)1);
    }

    /// <summary>Notes the head about to be published on the used ring.</summary>
    /// <param name="head">The head.</param>
    public void BeforePut(ushort head) => Volatile.Write(ref _header->LastBatchHead, head);

    /// <summary>Clears the head once it is on the used ring and records the used index.</summary>
    /// <param name="head">The head.</param>
    /// <param name="usedIndex">The used index now published.</param>
    public void AfterPut(ushort head, ushort usedIndex)
    {
        if (head < _size)
        {
            Volatile.Write(ref _desc[head].Inflight, (byte)0);
        }

        Interlocked.MemoryBarrier();
        Volatile.Write(ref _header->UsedIdx, usedIndex);
    }

    /// <summary>
    /// After a restart: repairs an interrupted completion, then lists the heads still in flight, oldest fetch
    /// first. The region's contents come from a front-end and are only trusted as far as they are checked here.
    /// </summary>
    /// <param name="ringUsedIndex">The used index in the ring now.</param>
    /// <param name="heads">Receives the heads; at least the queue size long.</param>
    /// <returns>How many.</returns>
    public int Recover(ushort ringUsedIndex, Span<ushort> heads)
    {
        if (_header->UsedIdx != ringUsedIndex)
        {
            // The used ring was published but the flag not cleared: that head is done.
            ushort last = _header->LastBatchHead;
            if (last < _size)
            {
                _desc[last].Inflight = 0;
            }

            Interlocked.MemoryBarrier();
            _header->UsedIdx = ringUsedIndex;
        }

        int n = 0;
        for (int i = 0; i < _size && n < heads.Length; i++)
        {
            if (_desc[i].Inflight == 1)
            {
                heads[n++] = (ushort)i;
            }
            else
            {
                _desc[i].Inflight = 0;
            }
        }

        var counters = new ulong[n];
        for (int i = 0; i < n; i++)
        {
            counters[i] = _desc[heads[i]].Counter;
        }

        counters.AsSpan().Sort(heads[..n]);
        return n;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct Header
    {
        public ulong Features;
        public ushort Version;
        public ushort DescNum;
        public ushort LastBatchHead;
        public ushort UsedIdx;
    }

    [StructLayout(LayoutKind.Sequential, Size = 16)]
    private struct DescState
    {
        public byte Inflight;
        public byte Pad0;
        public byte Pad1;
        public byte Pad2;
        public byte Pad3;
        public byte Pad4;
        public ushort Next;
        public ulong Counter;
    }
}
