using System.Runtime.InteropServices;
using Hci.Core.Blocks;
using Hci.Core.Reactors;
using Hci.Core.Replication;

namespace Hci.Core.Storage;

/// <summary>
/// A queue on a <see cref="ReplicaStore"/>, owned by one thread like a <see cref="BlockQueue"/>: <see cref="Submit"/>
/// starts a request, <see cref="Poll"/> moves requests on and answers them (never Submit). Requests go through
/// stages: fencing, then (writes) allocation and the activity log, then the data and its checksum pages in parallel.
/// Every per-request object is pooled: nothing is allocated per I/O in steady state.
/// </summary>
internal sealed unsafe class ReplicaStoreQueue : IBlockCompletionHandler, IDisposable
{
    private const int BlockSize = ReplicaGeometry.BlockSize;
    private const int MaxReadRetries = 3;

    private readonly ReplicaStore _store;
    private readonly BlockQueue _queue;
    private readonly Reactor? _reactor;
    private readonly bool _nativeFua;
    private readonly int _maxSegments;
    private readonly int _bufferAlignment;
    private readonly Stack<StoreOp> _freeOps = new();
    private readonly Stack<BlockRequest> _freeIos = new();
    private const int WriteBackBatch = 64;
    private const long WriteBackAfterMs = 1000;

    private readonly Stack<PageWrite> _freePageWrites = new();
    private readonly int[] _writeBack = new int[WriteBackBatch];
    private StoreOp? _parked;
    private StoreOp? _parkedTail;
    private StoreOp? _doneHead;
    private StoreOp? _doneTail;
    private int _inFlight;
    private int _parkedCount;
    private bool _disposed;

    public ReplicaStoreQueue(ReplicaStore store, Reactor? reactor, int depth)
    {
        _store = store;
        _reactor = reactor;
        var device = store.Device;
        _queue = reactor != null ? reactor.AcquireQueue(device, depth) : device.CreateQueue(depth);
        _nativeFua = device.Supports(BlockDeviceCapabilities.ForceUnitAccess);
        _maxSegments = Math.Min(device.Geometry.MaxSegments, BlockRequest.MaxSegmentsLimit);
        _bufferAlignment = device.Geometry.BufferAlignment;
    }

    public ReplicaStore Store => _store;

    /// <summary>Requests submitted and not answered yet.</summary>
    public int InFlight => _inFlight;

    /// <summary>Requests that wait for a metadata page another queue is writing (a reactor must not sleep on them).</summary>
    public int ParkedCount => _parkedCount;

    /// <summary>True when a <see cref="Poll"/> would move something on without the device (answers to deliver,
    /// requests waiting for another queue's metadata write): a reactor must not sleep then.</summary>
    public bool HasPendingWork => _doneHead != null || _parkedCount > 0;

    /// <summary>Answers are ready to be delivered.</summary>
    public bool HasAnswers => _doneHead != null;

    /// <summary>Requests wait for a metadata page version (written by this queue or another).</summary>
    public bool HasParked => _parkedCount > 0;

    /// <summary>Device I/O in flight on this queue's device queue.</summary>
    public int DeviceInFlight => _queue.InFlight;

    /// <summary>Starts a request; its answer comes from <see cref="Poll"/>.</summary>
    public void Submit(ReplicaRequest request)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        _inFlight++;
        var op = _freeOps.TryPop(out var o) ? o : new StoreOp();
        op.Reset(request);
        request.Status = ReplicaStatus.Ok;
        request.Result = 0;
        request.ObservedEpoch = 0;
        request.Allocated = false;
        var status = Validate(request);
        if (status != ReplicaStatus.Ok)
        {
            _store.Stats.CountInvalid();
            Finish(op, status, 0);
            return;
        }

        Run(op);
    }

    /// <summary>Reaps device completions, moves waiting requests on and answers those that are done.</summary>
    /// <returns>How many requests were answered.</returns>
    public int Poll()
    {
        if (_disposed)
        {
            return 0;
        }

        _queue.Poll(0, 0);
        var parked = _parked;
        _parked = _parkedTail = null;
        _parkedCount = 0;
        while (parked != null)
        {
            var op = parked;
            parked = op.Next;
            op.Next = null;
            op.Waiting = false;
            Run(op);
        }

        var done = _doneHead;
        _doneHead = _doneTail = null;
        int answered = 0;
        while (done != null)
        {
            var op = done;
            done = op.Next;
            var request = op.Request;
            var status = op.Status;
            int result = op.Result;
            op.Request = null!;
            op.Next = null;
            _freeOps.Push(op);
            _inFlight--;
            answered++;
            request.Complete(status, result);
        }

        return answered;
    }

    /// <summary>Waits for everything in flight, then closes the device queue.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        while (_inFlight > 0 || _queue.InFlight > 0)
        {
            if (_queue.InFlight > 0 && _parkedCount == 0 && _doneHead == null)
            {
                _queue.Poll(1, 10);
            }

            Poll();
        }

        _disposed = true;
        if (_reactor != null)
        {
            _reactor.ReleaseQueue(_queue);
        }
        else
        {
            _queue.Dispose();
        }

        while (_freeIos.TryPop(out var io))
        {
            io.Dispose();
        }

        while (_freePageWrites.TryPop(out var pw))
        {
            pw.Dispose();
        }

        while (_freeOps.TryPop(out var op))
        {
            op.Dispose();
        }
    }

    // ---------------------------------------------------------------- validation

    private ReplicaStatus Validate(ReplicaRequest r)
    {
        if (r.Operation is < ReplicaOperation.Read or > ReplicaOperation.DropVolume
            || (r.Flags & ~BlockRequestFlags.ForceUnitAccess) != 0
            || r.Class > IoClass.Background)
        {
            return ReplicaStatus.Invalid;
        }

        if (r.Operation is ReplicaOperation.ListExtents or ReplicaOperation.GetDirtyRegions)
        {
            // Offset, extent and length are not used; the one segment (if any) receives the list.
            return r.SegmentCount > 1 || (r.SegmentCount == 1 && (r.Segments[0].Address == 0 || r.Segments[0].Length <= 0)) ? ReplicaStatus.Invalid : ReplicaStatus.Ok;
        }

        long extentSize = _store.ExtentSize;
        long offset = r.Offset;
        long length = r.Length;
        if (offset < 0 || length < 0 || ((offset | length) & (BlockSize - 1)) != 0 || length > ReplicaGeometry.MaxTransfer
            || offset > extentSize - length || r.Extent < 0 || r.Extent >= long.MaxValue / extentSize)
        {
            return ReplicaStatus.Invalid;
        }

        switch (r.Operation)
        {
            case ReplicaOperation.Read:
            case ReplicaOperation.Write:
                return length == 0 ? ReplicaStatus.Invalid : ValidateSegments(r, length);
            case ReplicaOperation.ReadChecksums:
                return length == 0 || r.Checksums == null ? ReplicaStatus.Invalid : ReplicaStatus.Ok;
            default:
                return ReplicaStatus.Ok;
        }
    }

    private ReplicaStatus ValidateSegments(ReplicaRequest r, long length)
    {
        var segments = r.Segments;
        if (segments.Length == 0 || segments.Length > _maxSegments)
        {
            return ReplicaStatus.Invalid;
        }

        long sum = 0;
        nint mask = _bufferAlignment - 1;
        foreach (var s in segments)
        {
            if (s.Length <= 0 || s.Length > ReplicaGeometry.MaxTransfer || s.Address == 0 || ((s.Address | s.Length) & mask) != 0)
            {
                return ReplicaStatus.Invalid;
            }

            sum += s.Length;
        }

        return sum == length ? ReplicaStatus.Ok : ReplicaStatus.Invalid;
    }

    // ---------------------------------------------------------------- the state machine

    private void Run(StoreOp op)
    {
        while (true)
        {
            if (op.WaitCount > 0)
            {
                IssuePageWrites(op);
                int state = op.CheckWaits(_store);
                if (state < 0)
                {
                    Fail(op, state);
                    return;
                }

                if (state == 0)
                {
                    Park(op);
                    return;
                }
            }

            if (op.IoPending > 0)
            {
                return; // the device's completion runs the op again
            }

            if (!Step(op))
            {
                return;
            }
        }
    }

    /// <summary>Does the op's next step; false when it is done, parked or waits for the device.</summary>
    private bool Step(StoreOp op)
    {
        var r = op.Request;
        switch (op.Stage)
        {
            case OpStage.Admit:
            {
                var status = _store.Admit(op);
                if (status != ReplicaStatus.Ok)
                {
                    Finish(op, status, 0);
                    return false;
                }

                op.Stage = OpStage.BeforeData;
                return Start(op);
            }

            case OpStage.BeforeData:
                // Epoch durable; for writes, the allocation and activity log are durable too: data may go out.
                return Proceed(op);

            case OpStage.InFlight:
                return Conclude(op);

            case OpStage.Cleaning:
                if (op.IoErrno != 0)
                {
                    Finish(op, ReplicaStatus.IoError, op.IoErrno);
                    return false;
                }

                _store.MarkClean(op, r.Argument);
                op.Stage = OpStage.InFlight;
                return true;

            case OpStage.DropClearing:
                _store.ClearAllocations(op);
                op.Stage = OpStage.DropReleasing;
                return true;

            case OpStage.DropReleasing:
                if (!_store.TryReleaseSlots(op))
                {
                    Park(op);
                    return false;
                }

                if (r.Operation == ReplicaOperation.DropVolume)
                {
                    _store.ForgetVolume(op);
                    op.Stage = OpStage.DropForgetting;
                    return true;
                }

                Finish(op, ReplicaStatus.Ok, 0);
                return false;

            case OpStage.DropForgetting:
                Finish(op, ReplicaStatus.Ok, 0);
                return false;

            default:
                return false;
        }
    }

    /// <summary>After admission: the first step of each operation that needs no wait.</summary>
    private bool Start(StoreOp op)
    {
        var r = op.Request;
        switch (r.Operation)
        {
            case ReplicaOperation.Write:
            {
                int blocks = r.Length / BlockSize;
                var check = ComputeChecksums(r, op.Checksums, blocks);
                if (check != ReplicaStatus.Ok)
                {
                    Finish(op, check, 0);
                    return false;
                }

                var status = _store.BeginWrite(op, (int)(r.Offset / BlockSize), blocks);
                if (status != ReplicaStatus.Ok)
                {
                    Finish(op, status, 0);
                    return false;
                }

                op.WriteBegun = true;

                return true; // waits for the allocation and the log, then Proceed
            }

            case ReplicaOperation.MarkClean:
                if (!_store.PrepareClean(op))
                {
                    Finish(op, ReplicaStatus.Ok, 0); // no slot: nothing to clean
                    return false;
                }

                return true; // waits for the extent's checksum pages, then Proceed flushes the device

            case ReplicaOperation.DropExtent:
            case ReplicaOperation.DropVolume:
                _store.BeginDrop(op, r.Operation == ReplicaOperation.DropVolume);
                op.Stage = OpStage.DropClearing;
                return true;

            default:
                return true; // everything else proceeds once the epoch is durable
        }
    }

    private bool Proceed(StoreOp op)
    {
        var r = op.Request;
        switch (r.Operation)
        {
            case ReplicaOperation.Read:
            {
                int slot = _store.FindSlot(r.VolumeId, r.Extent, out long seq);
                if (slot < 0)
                {
                    ZeroSegments(r, 0, r.Length);
                    FillZeroChecksums(r);
                    r.Allocated = false;
                    _store.Stats.CountRead();
                    Finish(op, ReplicaStatus.Ok, r.Length);
                    return false;
                }

                r.Allocated = true;
                op.Slot = slot;
                op.SlotSeq = seq;
                op.Stage = OpStage.InFlight;
                SubmitData(op, BlockOperation.Read, fua: false);
                return false;
            }

            case ReplicaOperation.Write:
                op.Stage = OpStage.InFlight;
                _store.CommitChecksums(op, (int)(r.Offset / BlockSize), r.Length / BlockSize);
                SubmitData(op, BlockOperation.Write, op.Fua);
                return true; // issue the checksum pages now, in parallel with the data

            case ReplicaOperation.MarkClean:
                // The data of the regions must be durable too before they leave the log: a flush, then the log page.
                SubmitFlush(op, OpStage.Cleaning);
                return false;

            case ReplicaOperation.Flush:
                SubmitFlush(op, OpStage.InFlight);
                return false;

            case ReplicaOperation.ReadChecksums:
                r.Allocated = _store.CopyChecksums(r.VolumeId, r.Extent, (int)(r.Offset / BlockSize), r.Length / BlockSize, r.Checksums);
                Finish(op, ReplicaStatus.Ok, r.Length);
                return false;

            case ReplicaOperation.ListExtents:
            {
                long* into = ListBuffer(r, 8, out int capacity);
                Finish(op, ReplicaStatus.Ok, _store.ListExtents(r.VolumeId, into, capacity));
                return false;
            }

            case ReplicaOperation.GetDirtyRegions:
            {
                long* into = ListBuffer(r, 16, out int capacity);
                Finish(op, ReplicaStatus.Ok, _store.ListDirty(r.VolumeId, into, capacity));
                return false;
            }

            default: // Fence: the raised epoch is durable
                Finish(op, ReplicaStatus.Ok, 0);
                return false;
        }
    }

    /// <summary>A read's or write's device I/O and page writes are done.</summary>
    private bool Conclude(StoreOp op)
    {
        var r = op.Request;
        if (r.Operation == ReplicaOperation.Write)
        {
            op.WriteBegun = false;
            _store.EndWrite(op.Slot);
            if (op.IoErrno != 0)
            {
                Finish(op, ReplicaStatus.IoError, op.IoErrno);
                return false;
            }

            _store.Stats.CountWrite();
            Finish(op, ReplicaStatus.Ok, r.Length);
            WriteBackDeferred();
            return false;
        }

        if (op.IoErrno != 0)
        {
            Finish(op, ReplicaStatus.IoError, op.IoErrno);
            return false;
        }

        if (r.Operation == ReplicaOperation.Read)
        {
            return VerifyRead(op);
        }

        Finish(op, ReplicaStatus.Ok, 0); // flush, mark clean
        return false;
    }

    private bool VerifyRead(StoreOp op)
    {
        var r = op.Request;
        int blocks = r.Length / BlockSize;
        int firstBlock = (int)(r.Offset / BlockSize);
        var segments = r.Segments;
        int seg = 0;
        long segOffset = 0;
        int badBlock = -1;
        int bad = 0;
        for (int b = 0; b < blocks; b++)
        {
            uint crc = 0xFFFFFFFFu;
            int need = BlockSize;
            while (need > 0)
            {
                var s = segments[seg];
                int n = (int)Math.Min(need, s.Length - segOffset);
                crc = Crc32C.Append(crc, (byte*)s.Address + segOffset, n);
                need -= n;
                segOffset += n;
                if (segOffset == s.Length)
                {
                    seg++;
                    segOffset = 0;
                }
            }

            crc = ~crc;
            uint stored = _store.StoredChecksum(op.Slot, firstBlock + b);
            if (stored == 0)
            {
                // Never written since the slot was allocated: whatever the device holds reads as zeros (a block whose
                // real checksum is 0 was written with it and reads as it is).
                if (crc != 0)
                {
                    ZeroSegments(r, (long)b * BlockSize, BlockSize);
                }

                crc = Crc32C.ZeroBlock;
            }
            else if (stored != crc)
            {
                bad++;
                badBlock = badBlock < 0 ? firstBlock + b : badBlock;
            }

            if (r.Checksums != null)
            {
                r.Checksums[b] = crc;
            }
        }

        if (bad > 0)
        {
            if (op.Retries < MaxReadRetries && _store.SlotChangedSince(op.Slot, op.SlotSeq))
            {
                // A write to the extent ran alongside this read: its checksum may be newer than the data read. Read again.
                op.Retries++;
                op.SlotSeq = _store.FindSlot(r.VolumeId, r.Extent, out long seq) == op.Slot ? seq : op.SlotSeq;
                SubmitData(op, BlockOperation.Read, fua: false);
                return false;
            }

            ZeroSegments(r, 0, r.Length);
            _store.Stats.AddChecksumMismatches(bad);
            StorageLog.ChecksumMismatch(_store.Logger, _store.StoreId, r.VolumeId, r.Extent, badBlock);
            Finish(op, ReplicaStatus.ChecksumMismatch, 0);
            return false;
        }

        _store.Stats.CountRead();
        Finish(op, ReplicaStatus.Ok, r.Length);
        return false;
    }

    private static ReplicaStatus ComputeChecksums(ReplicaRequest r, uint* into, int blocks)
    {
        var segments = r.Segments;
        int seg = 0;
        long segOffset = 0;
        for (int b = 0; b < blocks; b++)
        {
            uint crc = 0xFFFFFFFFu;
            int need = BlockSize;
            while (need > 0)
            {
                var s = segments[seg];
                int n = (int)Math.Min(need, s.Length - segOffset);
                crc = Crc32C.Append(crc, (byte*)s.Address + segOffset, n);
                need -= n;
                segOffset += n;
                if (segOffset == s.Length)
                {
                    seg++;
                    segOffset = 0;
                }
            }

            into[b] = ~crc;
            if (r.Checksums != null && r.Checksums[b] != into[b])
            {
                return ReplicaStatus.BadPayload;
            }
        }

        return ReplicaStatus.Ok;
    }

    private static void ZeroSegments(ReplicaRequest r, long from, long length)
    {
        long at = 0;
        foreach (var s in r.Segments)
        {
            long start = Math.Max(from, at);
            long end = Math.Min(from + length, at + s.Length);
            if (start < end)
            {
                NativeMemory.Clear((byte*)s.Address + (start - at), (nuint)(end - start));
            }

            at += s.Length;
            if (at >= from + length)
            {
                return;
            }
        }
    }

    private static void FillZeroChecksums(ReplicaRequest r)
    {
        if (r.Checksums != null)
        {
            new Span<uint>(r.Checksums, r.Length / BlockSize).Fill(Crc32C.ZeroBlock);
        }
    }

    private static long* ListBuffer(ReplicaRequest r, int entrySize, out int capacity)
    {
        capacity = 0;
        if (r.SegmentCount == 0)
        {
            return null;
        }

        var s = r.Segments[0];
        capacity = (int)Math.Min(int.MaxValue, s.Length / entrySize);
        return (long*)s.Address;
    }

    private void Park(StoreOp op)
    {
        if (op.Waiting)
        {
            return;
        }

        // In order of arrival: requests move on in the order they came, as far as their waits allow.
        op.Waiting = true;
        op.Next = null;
        if (_parkedTail == null)
        {
            _parked = op;
        }
        else
        {
            _parkedTail.Next = op;
        }

        _parkedTail = op;
        _parkedCount++;
    }

    private void Fail(StoreOp op, int errno)
    {
        if (op.IoPending > 0)
        {
            op.IoErrno = errno; // the device's completion finishes it
            op.WaitCount = 0;
            return;
        }

        if (op.WriteBegun)
        {
            op.WriteBegun = false;
            _store.EndWrite(op.Slot);
        }

        Finish(op, ReplicaStatus.IoError, errno);
    }

    private void Finish(StoreOp op, ReplicaStatus status, int result)
    {
        op.Stage = OpStage.Done;
        op.Status = status;
        op.Result = result;
        op.Next = null;
        if (_doneTail == null)
        {
            _doneHead = op;
        }
        else
        {
            _doneTail.Next = op;
        }

        _doneTail = op;
    }

    // ---------------------------------------------------------------- device I/O

    private BlockRequest RentIo(StoreOp op)
    {
        var io = _freeIos.TryPop(out var x) ? x : new BlockRequest(_maxSegments) { Handler = this };
        io.Reset();
        io.UserState = op;
        io.UserTag = 0;
        io.Class = op.Request.Class;
        return io;
    }

    private void SubmitFlush(StoreOp op, OpStage next)
    {
        op.Stage = next;
        var io = RentIo(op);
        io.SetRange(BlockOperation.Flush, 0, 0);
        op.IoPending = 1;
        _queue.Submit(io);
    }

    private void SubmitData(StoreOp op, BlockOperation operation, bool fua)
    {
        var r = op.Request;
        var io = RentIo(op);
        io.Operation = operation;
        io.Offset = _store.SlotOffset(op.Slot) + r.Offset;
        io.Flags = fua && _nativeFua ? BlockRequestFlags.ForceUnitAccess : BlockRequestFlags.None;
        io.UserTag = fua && !_nativeFua ? 1 : 0; // 1: flush after the write
        foreach (var s in r.Segments)
        {
            io.AddSegment((void*)s.Address, (int)s.Length);
        }

        op.IoPending = 1;
        _queue.Submit(io);
    }

    void IBlockCompletionHandler.OnCompleted(BlockRequest io)
    {
        if (io.UserState is PageWrite pw)
        {
            OnPageWriteCompleted(pw, io);
            return;
        }

        var op = (StoreOp)io.UserState!;
        if (io.Result >= 0 && io.UserTag == 1 && io.Operation == BlockOperation.Write)
        {
            io.SetRange(BlockOperation.Flush, 0, 0);
            io.UserTag = 0;
            _queue.Submit(io);
            return;
        }

        if (io.Result < 0)
        {
            op.IoErrno = io.Result;
        }

        io.UserState = null;
        _freeIos.Push(io);
        op.IoPending--;
        if (!op.Waiting && op.Stage != OpStage.Done)
        {
            Run(op);
        }
    }

    /// <summary>Writes back the checksum pages that overwrites left for later, in batches: when
    /// <see cref="WriteBackBatch"/> wait, or the oldest has waited <see cref="WriteBackAfterMs"/>. Coalesced, so a page
    /// that several writes changed goes out once; in the background class.</summary>
    private void WriteBackDeferred()
    {
        int waiting = _store.DeferredPages(out long since);
        if (waiting == 0 || (waiting < WriteBackBatch && Environment.TickCount64 - since < WriteBackAfterMs))
        {
            return;
        }

        int taken = _store.TakeDeferredPages(_writeBack);
        for (int i = 0; i < taken; i++)
        {
            TryIssuePage(_writeBack[i], IoClass.Background);
        }
    }

    private void IssuePageWrites(StoreOp op)
    {
        for (int i = 0; i < op.WaitCount; i++)
        {
            TryIssuePage(op.WaitPage(i), op.Request.Class);
        }
    }

    private void TryIssuePage(int page, IoClass ioClass)
    {
        var pw = _freePageWrites.TryPop(out var x) ? x : new PageWrite(this);
        if (!_store.TryStartPageWrite(page, pw.Buffer, out long version, out bool fua))
        {
            _freePageWrites.Push(pw);
            return;
        }

        pw.Page = page;
        pw.Version = version;
        pw.Fua = fua;
        pw.Class = ioClass;
        var io = pw.Io;
        io.SetReadWrite(BlockOperation.Write, _store.PageDeviceOffset(page), pw.Buffer, ReplicaStoreLayout.PageSize, fua && _nativeFua ? BlockRequestFlags.ForceUnitAccess : BlockRequestFlags.None);
        io.Class = ioClass;
        io.UserTag = fua && !_nativeFua ? 1 : 0;
        _queue.Submit(io);
    }

    private void OnPageWriteCompleted(PageWrite pw, BlockRequest io)
    {
        if (io.Result >= 0 && io.UserTag == 1 && io.Operation == BlockOperation.Write)
        {
            io.SetRange(BlockOperation.Flush, 0, 0);
            io.UserTag = 0;
            _queue.Submit(io);
            return;
        }

        int page = pw.Page;
        _store.OnPageWritten(page, pw.Version, pw.Fua, io.Result < 0 ? -io.Result : 0);
        var ioClass = pw.Class;
        _freePageWrites.Push(pw);

        // Changes made while this write was in flight go out now, one write per page at a time.
        TryIssuePage(page, ioClass);
    }

    /// <summary>A metadata page write: its own 4 KiB aligned buffer (a snapshot of the page) and request.</summary>
    private sealed class PageWrite : IDisposable
    {
        public PageWrite(ReplicaStoreQueue owner)
        {
            Buffer = (byte*)NativeMemory.AlignedAlloc(ReplicaStoreLayout.PageSize, ReplicaStoreLayout.PageSize);
            Io = new BlockRequest(1) { Handler = owner, UserState = this };
        }

        public byte* Buffer;
        public BlockRequest Io;
        public int Page;
        public long Version;
        public bool Fua;
        public IoClass Class;

        public void Dispose()
        {
            Io.Dispose();
            if (Buffer != null)
            {
                NativeMemory.AlignedFree(Buffer);
                Buffer = null;
            }
        }
    }
}
