using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using Hci.Core.Blocks;

namespace Hci.Transport.Virtio;

/// <summary>
/// Serves one virtio-blk virtqueue on one <see cref="BlockQueue"/>: pops chains, checks them, turns them into
/// block requests whose buffers point straight into guest memory (no copy), and answers on the used ring. One
/// request object per descriptor head, made up front: nothing is allocated per I/O. Runs on the queue's owner
/// thread.
/// </summary>
/// <remarks>
/// When <see cref="IsThrottled"/> says so, nothing is popped: the guest's requests stay in its ring and kicks
/// stay suppressed, and what accumulated is taken as one batch once the throttle lifts (the paper's idea of
/// throttling close to the VM).
/// </remarks>
internal sealed unsafe class VirtioBlkQueueProcessor : IBlockCompletionHandler, IDisposable
{
    private readonly SplitVirtqueue _vq;
    private readonly BlockQueue _queue;
    private readonly BlockRequest[] _requests;
    private readonly nint[] _statusAddresses;
    private readonly byte[] _id = new byte[VirtioBlk.IdLength];
    private readonly ChainSegment[] _chain;
    private readonly ChainSegment[] _data;
    private readonly Action? _signal;
    private readonly BlockRequest[] _answered;
    private int _answeredCount;
    private long _batchClock;
    private readonly int _tenant;
    private readonly nint _alignMask;
    private readonly long _maxTransfer;
    private readonly bool _fua;
    private readonly bool _canFlush;
    private readonly bool[] _flushAfter;
    private Bounce?[]? _bounces;
    private bool _kicksSuppressed;
    private bool _polling;
    private bool _notifyPending;

    /// <summary>Creates the processor.</summary>
    /// <param name="vq">The virtqueue.</param>
    /// <param name="queue">The block queue requests go to (a scheduler's, a volume's or a device's).</param>
    /// <param name="serial">The device id returned by GET_ID (at most 20 bytes of it are used).</param>
    /// <param name="tenant">The tenant the guest's I/O counts against.</param>
    /// <param name="signal">Raises the guest's interrupt (writes the call eventfd); null in tests that read the used ring.</param>
    public VirtioBlkQueueProcessor(SplitVirtqueue vq, BlockQueue queue, string serial, int tenant, Action? signal)
    {
        _vq = vq ?? throw new ArgumentNullException(nameof(vq));
        _queue = queue ?? throw new ArgumentNullException(nameof(queue));
        ArgumentNullException.ThrowIfNull(serial);
        _signal = signal;
        _tenant = tenant;
        _alignMask = queue.Device.Geometry.BufferAlignment - 1;
        _maxTransfer = queue.Device.Geometry.MaxTransferBytes;
        _fua = queue.Device.Supports(BlockDeviceCapabilities.ForceUnitAccess);
        _canFlush = queue.Device.Supports(BlockDeviceCapabilities.Flush);
        Encoding.ASCII.GetBytes(serial.AsSpan(0, Math.Min(serial.Length, VirtioBlk.IdLength)), _id);
        int maxSegments = Math.Min(queue.Device.Geometry.MaxSegments, BlockRequest.MaxSegmentsLimit);
        _chain = new ChainSegment[maxSegments + 2];
        _data = new ChainSegment[maxSegments + 2];
        _requests = new BlockRequest[vq.Size];
        _answered = new BlockRequest[vq.Size];
        _statusAddresses = new nint[vq.Size];
        _flushAfter = new bool[vq.Size];
        for (int i = 0; i < _requests.Length; i++)
        {
            _requests[i] = new BlockRequest(maxSegments) { Handler = this, Class = IoClass.Vm, Tenant = tenant, UserTag = i };
        }
    }

    /// <summary>The class the front-end's requests are scheduled as: <see cref="IoClass.Vm"/> (default) for a guest
    /// behind I/O virtualization, <see cref="IoClass.Container"/> for a process that reaches the back-end directly.</summary>
    public IoClass Class
    {
        get => _requests.Length > 0 ? _requests[0].Class : IoClass.Vm;
        init
        {
            foreach (var r in _requests)
            {
                r.Class = value;
            }
        }
    }

    /// <summary>
    /// Asked before popping: true leaves the guest's requests in its ring for now. When null, the block queue's
    /// own <see cref="BlockQueue.IsThrottled"/> is asked for this processor's tenant.
    /// </summary>
    public Func<bool>? IsThrottled { get; set; }

    /// <summary>
    /// The export is read-only (VIRTIO_BLK_F_RO was offered): OUT, DISCARD and WRITE_ZEROES are answered
    /// VIRTIO_BLK_S_IOERR and never reach the device, whatever the device itself would allow.
    /// </summary>
    public bool ReadOnly { get; init; }

    /// <summary>
    /// Asked for each write: true when the guest sees a write-through cache (it cleared the writeback byte, or did
    /// not negotiate VIRTIO_BLK_F_FLUSH, so it never sends a flush). Such writes are made durable before they are
    /// answered: FUA where the device has it, otherwise a flush after the write. Null: write-back.
    /// </summary>
    public Func<bool>? IsWriteThrough { get; init; }

    /// <summary>Requests submitted to the block queue and not yet answered.</summary>
    public int InFlight { get; private set; }

    /// <summary>True when the last <see cref="Process(bool)"/> left work in the ring because the tenant was throttled.</summary>
    public bool Throttled => _kicksSuppressed;

    /// <summary>The shared in-flight record, when the front-end gave one (restart support).</summary>
    internal InflightRegion? Inflight { get; set; }

    /// <summary>
    /// Told of an unexpected exception while a chain was turned into a request (a defect, not a guest's doing:
    /// hostile chains are answered in virtio terms). The chain was answered VIRTIO_BLK_S_IOERR and the ring goes on.
    /// </summary>
    public Action<Exception>? OnFault { get; init; }

    /// <summary>Chains answered with an error because handling them threw (see <see cref="OnFault"/>).</summary>
    public long Faults { get; private set; }

    /// <summary>Chains failed as malformed so far.</summary>
    public long Malformed { get; private set; }

    /// <summary>Interrupts raised so far.</summary>
    public long Interrupts { get; private set; }

    /// <summary>Requests completed so far.</summary>
    public long Completed { get; private set; }

    /// <summary>Takes every available chain (unless throttled) and submits it, then asks the guest to kick for the next one.</summary>
    /// <returns>Chains taken.</returns>
    public int Process() => Process(armKick: true);

    /// <summary>
    /// Takes every available chain (unless throttled) and submits it. A reactor that keeps polling the ring passes
    /// <paramref name="armKick"/> false: kicks then stay suppressed (the guest saves its notifications while the
    /// back-end is looking anyway), and it passes true once before it sleeps.
    /// </summary>
    /// <param name="armKick">Ask the guest to kick for the next chain (and look again, closing the race).</param>
    /// <returns>Chains taken.</returns>
    public int Process(bool armKick)
    {
        if (IsThrottled?.Invoke() ?? _queue.IsThrottled(_tenant))
        {
            if (!_kicksSuppressed)
            {
                _vq.SuppressKicks(true);
                _kicksSuppressed = true;
            }

            return 0;
        }

        if (_kicksSuppressed)
        {
            _vq.SuppressKicks(false);
            _kicksSuppressed = false;
        }

        if (!armKick && !_polling)
        {
            _vq.SuppressKicks(true);
            _polling = true;
        }

        int taken = 0;
        _batchClock = 0;
        do
        {
            while (_vq.TryPop(out ushort head))
            {
                taken++;
                Inflight?.Fetched(head);
                HandleSafely(head);
            }
        }
        while (armKick && _vq.ArmKick());

        if (armKick)
        {
            _polling = false;
        }

        FlushNotifications();
        return taken;
    }

    /// <summary>
    /// Runs again the requests a previous back-end took and never answered (from the in-flight record after a
    /// restart), oldest first; they are already counted as popped.
    /// </summary>
    /// <param name="heads">The heads.</param>
    internal void Resubmit(ReadOnlySpan<ushort> heads)
    {
        foreach (ushort head in heads)
        {
            HandleSafely(head);
        }

        FlushNotifications();
    }

    /// <summary>
    /// Raises the guest's interrupt if what was returned since the last call needs one. Completions only mark
    /// it pending, so a batch of them costs one check and at most one eventfd write: call this after each poll
    /// of the block queue (<see cref="Process(bool)"/> calls it too).
    /// </summary>
    public void FlushNotifications()
    {
        if (_notifyPending)
        {
            _notifyPending = false;
            if (_vq.NeedsInterrupt())
            {
                Interrupts++;
                _signal?.Invoke();
            }
        }

        if (_answeredCount > 0)
        {
            // Completion and notification end here for the batch: used ring written, interrupt raised.
            long now = System.Diagnostics.Stopwatch.GetTimestamp();
            for (int i = 0; i < _answeredCount; i++)
            {
                _answered[i].EndTrace(now);
                _answered[i] = null!;
            }

            _answeredCount = 0;
        }
    }

    /// <inheritdoc/>
    public void OnCompleted(BlockRequest request)
    {
        ushort head = (ushort)request.UserTag;
        if (_flushAfter[head])
        {
            // A write-through write on a device without FUA: the write is done, make it durable before answering.
            _flushAfter[head] = false;
            if (request.Error == BlockError.None)
            {
                FinishBounce(head, request);
                request.Reset();
                request.SetRange(BlockOperation.Flush, 0, 0);
                _queue.Submit(request);
                return;
            }
        }

        InFlight--;
        FinishBounce(head, request);
        byte status = request.Error switch
        {
            BlockError.None => VirtioBlk.StatusOk,
            BlockError.Unsupported => VirtioBlk.StatusUnsupported,
            _ => VirtioBlk.StatusIoErr,
        };
        Finish(head, (byte*)_statusAddresses[head], status, request.Operation == BlockOperation.Read && status == VirtioBlk.StatusOk ? (uint)request.Length : 0);
        if (request.IsTraced)
        {
            _answered[_answeredCount++] = request; // its trace ends once the batch's interrupt is raised
        }
    }

    /// <summary>Releases the request objects; nothing may be in flight.</summary>
    public void Dispose()
    {
        foreach (var r in _requests)
        {
            if (!r.IsInFlight)
            {
                r.Dispose();
            }
        }
    }

    private void FinishBounce(ushort head, BlockRequest request)
    {
        var bounce = _bounces?[head];
        if (bounce != null)
        {
            _bounces![head] = null;
            bounce.Finish(request.Error == BlockError.None && request.Operation == BlockOperation.Read);
        }
    }

    // Nothing a guest sends may throw out of here and stop the reactor with the ring half-read: whatever escapes
    // Handle is answered as an I/O error on that chain (if it was not submitted) and reported.
    private void HandleSafely(ushort head)
    {
        try
        {
            Handle(head);
        }
        catch (Exception e) when (head >= _requests.Length || !_requests[head].IsInFlight)
        {
            Faults++;
            if (head < _requests.Length)
            {
                _flushAfter[head] = false;
                if (_bounces?[head] is { } bounce)
                {
                    _bounces[head] = null;
                    bounce.Finish(copyOut: false);
                }
            }

            nint status = head < _requests.Length ? _statusAddresses[head] : 0;
            if (status != 0)
            {
                Finish(head, (byte*)status, VirtioBlk.StatusIoErr, 0);
            }
            else
            {
                PushUsed(head, 0);
                Notify();
            }

            OnFault?.Invoke(e);
        }
    }

    private void Handle(ushort head)
    {
        if (head < _requests.Length && !_requests[head].IsInFlight && RequestStages.Enabled)
        {
            // The front-end stage: from the pop (one clock read per batch of pops) to the submission.
            if (_batchClock == 0)
            {
                _batchClock = System.Diagnostics.Stopwatch.GetTimestamp();
            }

            _requests[head].StartTrace(_batchClock);
        }

        var status = _vq.WalkChain(head, _chain, out int count);
        if (status != ChainStatus.Ok || head >= _requests.Length)
        {
            // Nothing trustworthy to answer in: return the chain empty.
            Malformed++;
            PushUsed(head, 0);
            Notify();
            return;
        }

        var error = VirtioBlkRequest.Parse(_chain.AsSpan(0, count), _data, out var blk);
        if (error == VirtioBlkParseError.NoStatus)
        {
            Malformed++;
            PushUsed(head, 0);
            Notify();
            return;
        }

        if (error != VirtioBlkParseError.None)
        {
            Malformed++;
            Finish(head, (byte*)blk.Status, VirtioBlkRequest.StatusFor(error), 0);
            return;
        }

        var request = _requests[head];
        if (request.IsInFlight)
        {
            // The guest offered a head that is still ours: a broken or hostile driver. Its status byte is in use; drop it.
            Malformed++;
            return;
        }

        _statusAddresses[head] = blk.Status;

        switch (blk.Type)
        {
            case VirtioBlk.TypeGetId:
                WriteId(blk);
                Finish(head, (byte*)blk.Status, VirtioBlk.StatusOk, (uint)Math.Min(blk.DataLength, VirtioBlk.IdLength));
                return;
            case VirtioBlk.TypeIn:
            case VirtioBlk.TypeOut:
                // Everything the guest controls is checked before a byte moves: the total (64-bit: descriptors
                // may alias the same memory and add up past 2^32) against the device's largest transfer, which
                // also bounds every segment below 2^31, and the segment count against the request's room.
                if (blk.Sector > long.MaxValue / VirtioBlk.SectorSize || blk.DataLength <= 0 || blk.DataLength > _maxTransfer
                    || blk.DataCount > request.SegmentCapacity || (ReadOnly && blk.Type == VirtioBlk.TypeOut))
                {
                    Finish(head, (byte*)blk.Status, VirtioBlk.StatusIoErr, 0);
                    return;
                }

                request.Reset();
                request.Operation = blk.Type == VirtioBlk.TypeIn ? BlockOperation.Read : BlockOperation.Write;
                request.Offset = (long)blk.Sector * VirtioBlk.SectorSize;
                for (int i = 0; i < blk.DataCount; i++)
                {
                    request.AddSegment((void*)_data[i].Address, (int)_data[i].Length);
                }

                if (request.Operation == BlockOperation.Write && IsWriteThrough != null && IsWriteThrough())
                {
                    if (_fua)
                    {
                        request.Flags = BlockRequestFlags.ForceUnitAccess;
                    }
                    else
                    {
                        _flushAfter[head] = _canFlush;
                    }
                }

                break;
            case VirtioBlk.TypeFlush:
                request.SetRange(BlockOperation.Flush, 0, 0);
                break;
            default:
                // Discard and write-zeroes: one range, {sector, num_sectors, flags}.
                if (ReadOnly)
                {
                    Finish(head, (byte*)blk.Status, VirtioBlk.StatusIoErr, 0);
                    return;
                }

                if (blk.DataLength != VirtioBlk.RangeSize || _data[0].Length < VirtioBlk.RangeSize)
                {
                    Finish(head, (byte*)blk.Status, blk.DataLength > VirtioBlk.RangeSize ? VirtioBlk.StatusUnsupported : VirtioBlk.StatusIoErr, 0);
                    return;
                }

                var range = new ReadOnlySpan<byte>((void*)_data[0].Address, VirtioBlk.RangeSize);
                ulong sector = BinaryPrimitives.ReadUInt64LittleEndian(range);
                uint sectors = BinaryPrimitives.ReadUInt32LittleEndian(range[8..]);
                if (sector > long.MaxValue / VirtioBlk.SectorSize)
                {
                    Finish(head, (byte*)blk.Status, VirtioBlk.StatusIoErr, 0);
                    return;
                }

                request.SetRange(blk.Type == VirtioBlk.TypeDiscard ? BlockOperation.Discard : BlockOperation.WriteZeroes, (long)sector * VirtioBlk.SectorSize, (long)sectors * VirtioBlk.SectorSize);
                break;
        }

        request.UserState = null;
        if (request.SegmentCount > 0 && !Aligned(request))
        {
            // The bounce copies guest memory: only a request the device would take gets that far.
            var refusal = _queue.Device.Validate(request, out _);
            if (refusal == BlockError.Misaligned && ((request.Offset | request.Length) & (_queue.Device.Geometry.LogicalBlockSize - 1)) == 0)
            {
                refusal = BlockError.None; // only the guest's buffers are misaligned (checked last): what the bounce is for
            }

            if (refusal != BlockError.None)
            {
                _flushAfter[head] = false;
                Finish(head, (byte*)blk.Status, refusal == BlockError.Unsupported ? VirtioBlk.StatusUnsupported : VirtioBlk.StatusIoErr, 0);
                return;
            }

            BounceRequest(head, request);
        }

        InFlight++;
        _queue.Submit(request);
    }

    private bool Aligned(BlockRequest request)
    {
        if (_alignMask == 0)
        {
            return true;
        }

        foreach (var segment in request.Segments)
        {
            if (((segment.Address | segment.Length) & _alignMask) != 0)
            {
                return false;
            }
        }

        return true;
    }

    // Guest buffers the device cannot take as they are (an odd address or length under O_DIRECT) go through one
    // aligned buffer: a copy, on a path a Linux guest does not take (its buffers are page or sector aligned).
    private void BounceRequest(ushort head, BlockRequest request)
    {
        var bounce = new Bounce(request);
        _bounces ??= new Bounce?[_requests.Length];
        _bounces[head] = bounce;
        long offset = request.Offset;
        var operation = request.Operation;
        var flags = request.Flags;
        request.Reset();
        request.SetReadWrite(operation, offset, bounce.Buffer, bounce.Length, flags);
    }

    private void WriteId(in VirtioBlkRequest blk)
    {
        int written = 0;
        for (int i = 0; i < blk.DataCount && written < VirtioBlk.IdLength; i++)
        {
            int n = (int)Math.Min(_data[i].Length, (uint)(VirtioBlk.IdLength - written));
            _id.AsSpan(written, n).CopyTo(new Span<byte>((void*)_data[i].Address, n));
            written += n;
        }
    }

    private void Finish(ushort head, byte* status, byte value, uint dataWritten)
    {
        *status = value;
        if (head < _requests.Length && !_requests[head].IsInFlight)
        {
            _statusAddresses[head] = 0; // answered: a later fault on this head must not write here
        }

        Completed++;
        PushUsed(head, dataWritten + 1);
        Notify();
    }

    private void PushUsed(ushort head, uint written)
    {
        var inflight = Inflight;
        inflight?.BeforePut(head);
        _vq.PushUsed(head, written);
        inflight?.AfterPut(head, _vq.UsedIndex);
    }

    private sealed class Bounce
    {
        private readonly (nint Address, int Length)[] _guest;

        public Bounce(BlockRequest request)
        {
            // Validated by the caller: at most the device's maximum transfer, the sum of the segments' lengths.
            Length = checked((int)request.Length);
            _guest = new (nint, int)[request.SegmentCount];
            Buffer = NativeMemory.AlignedAlloc((nuint)Math.Max(Length, 1), 4096);
            var segments = request.Segments;
            int at = 0;
            for (int i = 0; i < _guest.Length; i++)
            {
                _guest[i] = (segments[i].Address, (int)segments[i].Length);
                if (request.Operation == BlockOperation.Write)
                {
                    new ReadOnlySpan<byte>((void*)_guest[i].Address, _guest[i].Length).CopyTo(new Span<byte>((byte*)Buffer + at, _guest[i].Length));
                }

                at += _guest[i].Length;
            }
        }

        public void* Buffer { get; }

        public int Length { get; }

        public void Finish(bool copyOut)
        {
            if (copyOut)
            {
                int at = 0;
                foreach (var (address, length) in _guest)
                {
                    new ReadOnlySpan<byte>((byte*)Buffer + at, length).CopyTo(new Span<byte>((void*)address, length));
                    at += length;
                }
            }

            NativeMemory.AlignedFree(Buffer);
        }
    }

    private void Notify() => _notifyPending = true;
}
