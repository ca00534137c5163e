using System.Runtime.InteropServices;
using Hci.Core.Blocks;
using Hci.Core.Replication;

namespace Hci.Core.Storage;

/// <summary>
/// One replica request on its way through a <see cref="ReplicaStoreQueue"/>: the stage it is in, the metadata page
/// versions it waits for, the device I/O it has in flight. Pooled by the queue; nothing is allocated per request.
/// </summary>
internal sealed unsafe class StoreOp : IDisposable
{
    public const int MaxBlocks = ReplicaGeometry.MaxTransfer / ReplicaGeometry.BlockSize;

    private int[] _waitPage = new int[8];
    private long[] _waitVersion = new long[8];
    private bool[] _waitDurable = new bool[8];
    private int[] _slots = new int[4];

    public StoreOp()
    {
        Checksums = (uint*)NativeMemory.AllocZeroed(MaxBlocks, sizeof(uint));
    }

    public ReplicaRequest Request = null!;
    public OpStage Stage;
    public int IoPending;
    public int IoErrno;
    public int Slot = -1;
    public long SlotSeq;
    public int Retries;
    public bool Fua;
    public bool Waiting;
    public bool WriteBegun;
    public ReplicaStatus Status;
    public int Result;
    public StoreOp? Next;

    /// <summary>The computed checksums of a write's blocks.</summary>
    public uint* Checksums;

    public int WaitCount;
    public int SlotCount;

    public ReadOnlySpan<int> Slots => _slots.AsSpan(0, SlotCount);

    public void Reset(ReplicaRequest request)
    {
        Request = request;
        Stage = OpStage.Admit;
        IoPending = 0;
        IoErrno = 0;
        Slot = -1;
        SlotSeq = 0;
        Retries = 0;
        Fua = (request.Flags & BlockRequestFlags.ForceUnitAccess) != 0;
        Waiting = false;
        WriteBegun = false;
        Status = ReplicaStatus.Ok;
        Result = 0;
        Next = null;
        WaitCount = 0;
        SlotCount = 0;
    }

    public void AddWait(int page, long version, bool durable)
    {
        for (int i = 0; i < WaitCount; i++)
        {
            if (_waitPage[i] == page)
            {
                _waitVersion[i] = Math.Max(_waitVersion[i], version);
                _waitDurable[i] |= durable;
                return;
            }
        }

        if (WaitCount == _waitPage.Length)
        {
            Array.Resize(ref _waitPage, WaitCount * 2);
            Array.Resize(ref _waitVersion, WaitCount * 2);
            Array.Resize(ref _waitDurable, WaitCount * 2);
        }

        _waitPage[WaitCount] = page;
        _waitVersion[WaitCount] = version;
        _waitDurable[WaitCount] = durable;
        WaitCount++;
    }

    public int WaitPage(int i) => _waitPage[i];

    /// <summary>Drops the waits that are met; answers 1 when none is left, 0 while some wait, or a negative errno when
    /// a page the op waits for failed to write.</summary>
    public int CheckWaits(ReplicaStore store)
    {
        int kept = 0;
        for (int i = 0; i < WaitCount; i++)
        {
            int state = store.PageState(_waitPage[i], _waitVersion[i], _waitDurable[i]);
            if (state < 0)
            {
                return state;
            }

            if (state == 0)
            {
                _waitPage[kept] = _waitPage[i];
                _waitVersion[kept] = _waitVersion[i];
                _waitDurable[kept] = _waitDurable[i];
                kept++;
            }
        }

        WaitCount = kept;
        return kept == 0 ? 1 : 0;
    }

    public void AddSlot(int slot)
    {
        if (SlotCount == _slots.Length)
        {
            Array.Resize(ref _slots, SlotCount * 2);
        }

        _slots[SlotCount++] = slot;
    }

    public void Dispose()
    {
        if (Checksums != null)
        {
            NativeMemory.Free(Checksums);
            Checksums = null;
        }

        GC.SuppressFinalize(this);
    }

    ~StoreOp()
    {
        if (Checksums != null)
        {
            NativeMemory.Free(Checksums);
        }
    }
}

/// <summary>Where a <see cref="StoreOp"/> is.</summary>
internal enum OpStage : byte
{
    /// <summary>Checked and fenced; waits for a raised epoch to be durable.</summary>
    Admit,

    /// <summary>A write waits for its activity-log region (and epoch) to be durable before its data goes out.</summary>
    BeforeData,

    /// <summary>Device I/O and metadata page writes in flight; completes when both are done.</summary>
    InFlight,

    /// <summary>A mark-clean's device flush is in flight (its checksum pages are durable); then the log page.</summary>
    Cleaning,

    /// <summary>A drop waits for its checksum and log pages, then clears the allocation entries.</summary>
    DropClearing,

    /// <summary>A drop waits for its allocation entries and for writes still in flight on the slots.</summary>
    DropReleasing,

    /// <summary>A volume drop waits for its cleared volume-table entry.</summary>
    DropForgetting,

    /// <summary>Answered; waits for delivery in Poll.</summary>
    Done,
}
