using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Versioning;
using Hci.Core.Blocks;
using Hci.Core.Modules;
using Hci.Core.Native;
using Tmds.Linux;
using static Hci.Core.Native.Interop;

namespace Hci.Core.Devices;

/// <summary>One io_uring ring serving one thread's requests to an <see cref="IoUringBlockDevice"/>.</summary>
[SupportedOSPlatform("linux")]
internal sealed unsafe class IoUringBlockQueue : BlockQueue
{
    private const ulong WakeUserData = ulong.MaxValue;
    private const ulong WakeSourceUserData = ulong.MaxValue - 1;

    private readonly IoUringBlockDevice _device;
    private readonly IoUring _ring;
    private readonly BlockRequest?[] _slots;
    private readonly int[] _freeSlots;
    private readonly bool _extArg;
    private readonly bool _deferTaskRun;
    private bool _enabled;
    private int _freeCount;
    private BlockRequest? _heldHead;
    private BlockRequest? _heldTail;
    private FileDescriptorHandle? _eventFd;
    private ulong* _wakeBuffer;
    private bool _wakeArmed;
    private int _wakeSource = -1;
    private bool _wakeSourceArmed;
    private bool _woken;
    private BlockSegment[] _registered = [];
    private bool _fileAddRef;

    // Test seams (internal; InternalsVisibleTo Hci.Core.Tests): what a test cannot see or provoke from outside.

    /// <summary>READ_FIXED/WRITE_FIXED submissions (registered buffers used), for tests.</summary>
    internal long FixedSubmissions;

    /// <summary>When positive, single-segment transfers are submitted at most this many bytes at a time, so the
    /// kernel really completes them short and the queue must resume the rest (tests only).</summary>
    internal int TestMaxSubmitBytes;

    /// <summary>When positive, that many completions of requests are answered -EAGAIN instead of their result
    /// before being handled, as the kernel may for a buffered transfer (tests only).</summary>
    internal int TestEagainCompletions;

    public IoUringBlockQueue(IoUringBlockDevice device, int depth)
        : base(device)
    {
        _device = device;
        var support = device.Support;
        uint entries = (uint)Math.Max(8, (int)BitOperations.RoundUpToPowerOf2((uint)depth + 1));
        _ring = new IoUring(entries, entries * 2, support.SetupFlags);
        try
        {
            _extArg = support.HasExtArg;
            _deferTaskRun = support.DefersTaskRun;
            _enabled = (support.SetupFlags & IORING_SETUP_R_DISABLED) == 0;
            int slotCount = Math.Min(depth, (int)_ring.SqEntries - 1);
            _slots = new BlockRequest?[slotCount];
            _freeSlots = new int[slotCount];
            for (int i = 0; i < slotCount; i++)
            {
                _freeSlots[i] = slotCount - 1 - i;
            }

            _freeCount = slotCount;
            device.File.Handle.DangerousAddRef(ref _fileAddRef);
            int fd = device.File.Fd;
            if (_ring.Register(IORING_REGISTER_FILES, &fd, 1) < 0)
            {
                throw new IOException($"Registering '{device.Name}' with io_uring failed: {Errno.Describe(LibC.errno)}.");
            }

            _wakeBuffer = (ulong*)NativeMemory.AllocZeroed(sizeof(ulong));
            int eventFd = LibC.eventfd(0, LibC.EFD_CLOEXEC);
            if (eventFd >= 0)
            {
                _eventFd = new FileDescriptorHandle(eventFd);
            }
        }
        catch
        {
            ReleaseResources();
            throw;
        }
    }

    /// <inheritdoc/>
    public override bool TrySetWakeSource(int fd)
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        if (_wakeSourceArmed && fd != _wakeSource)
        {
            return false; // a poll on the old source is still in the ring; set the source before the first wait
        }

        _wakeSource = fd < 0 ? -1 : fd;
        return true;
    }

    /// <inheritdoc/>
    public override void Wake()
    {
        // The eventfd exists from the start: a wake that comes before the owner's first wait is remembered in its
        // counter, and the first armed read completes at once.
        var eventFd = _eventFd;
        if (eventFd == null)
        {
            return; // made without one (eventfd failed): waits end by completion or timeout
        }

        bool added = false;
        try
        {
            eventFd.DangerousAddRef(ref added);
            ulong one = 1;
            LibC.write(eventFd.Fd, &one, sizeof(ulong));
        }
        catch (ObjectDisposedException)
        {
        }
        finally
        {
            if (added)
            {
                eventFd.DangerousRelease();
            }
        }
    }

    /// <summary>Registers native memory regions (each at most 1 GiB) as fixed buffers; reads and writes inside them skip page pinning.</summary>
    public override bool TryRegisterBuffers(ReadOnlySpan<BlockSegment> regions)
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        if (_registered.Length != 0 || regions.IsEmpty || InFlight != 0)
        {
            return false;
        }

        fixed (BlockSegment* iov = regions)
        {
            if (_ring.Register(IORING_REGISTER_BUFFERS, iov, (uint)regions.Length) < 0)
            {
                return false;
            }
        }

        _registered = regions.ToArray();
        return true;
    }

    protected override void SubmitCore(BlockRequest request)
    {
        if (!_enabled)
        {
            Enable();
        }

        if (_freeCount == 0)
        {
            Hold(request);
            return;
        }

        Start(request);

        // Submit at once rather than at the next poll, unless the owner batches. Measured on a RAM-backed loop
        // device at QD32 (the stack is the bottleneck there), eager submission gave about 1.4x the IOPS of
        // submitting in the poll's batch: the device starts on a request while the rest of a completion batch is
        // still being handled.
        if (!BatchSubmissions)
        {
            _ring.Enter(0, -1);
        }
    }

    protected override int PollCore(int minCompletions, int timeoutMilliseconds)
    {
        if (!_enabled)
        {
            Enable();
        }

        _woken = false;
        int done = Reap();
        uint wait = done >= minCompletions ? 0u : (uint)(minCompletions - done);

        // Only requests holding a slot can complete during this wait; held ones start as slots free.
        uint atDevice = (uint)(_slots.Length - _freeCount);
        if (wait > atDevice && atDevice > 0)
        {
            wait = atDevice;
        }

        if (wait > 0 && timeoutMilliseconds != 0 && !_woken)
        {
            ArmWake();
        }
        else
        {
            wait = 0;
        }

        // With deferred task work, completions reach the ring only inside io_uring_enter(GETEVENTS).
        bool getEvents = _deferTaskRun && atDevice > 0;
        if (wait == 0 && _ring.PendingSubmissions == 0 && !getEvents)
        {
            return done;
        }

        while (true)
        {
            int rc = _ring.Enter(wait, _extArg ? timeoutMilliseconds : -1, getEvents);
            if (rc == 0 || rc == -Errno.ETIME)
            {
                break;
            }

            if (rc == -Errno.EINTR)
            {
                if (timeoutMilliseconds >= 0)
                {
                    break;
                }

                continue;
            }

            if (rc == -Errno.EBUSY || rc == -Errno.EAGAIN)
            {
                // The completion ring is full or the kernel is short of memory: reap, then try again.
                done += Reap();
                wait = 0;
                continue;
            }

            if (rc == -17 /* EEXIST */)
            {
                throw new InvalidOperationException("A block queue was used from a thread other than the one that first used it; a queue belongs to one thread.");
            }

            Environment.FailFast($"io_uring_enter failed unexpectedly: {Errno.Describe(-rc)}");
        }

        done += Reap();
        return done;
    }

    protected override void Dispose(bool disposing)
    {
        // BlockQueue.Dispose has drained everything in flight; held requests were submitted as slots freed.
        ReleaseResources();
        base.Dispose(disposing);
    }

    /// <summary>Enables a ring created disabled: the calling thread becomes its single issuer.</summary>
    private void Enable()
    {
        int rc = _ring.Register(IORING_REGISTER_ENABLE_RINGS, null, 0);
        if (rc < 0)
        {
            throw new IOException($"Enabling an io_uring ring failed: {Errno.Describe(-rc)}.");
        }

        _enabled = true;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Start(BlockRequest request)
    {
        int slot = _freeSlots[--_freeCount];
        _slots[slot] = request;
        request.Slot = slot;
        Prepare(request, slot);
    }

    private void Prepare(BlockRequest request, int slot)
    {
        var sqe = _ring.GetSqe();
        if (sqe == null)
        {
            // Cannot happen while slots < SQ entries and every poll submits; flush and retry once.
            _ring.Enter(0, -1);
            sqe = _ring.GetSqe();
            if (sqe == null)
            {
                Environment.FailFast("io_uring submission ring unexpectedly full.");
            }
        }

        sqe->fd = 0;
        sqe->flags = IOSQE_FIXED_FILE;
        sqe->user_data = (ulong)slot;
        long offset = request.Offset + request.Progress;
        switch (request.Operation)
        {
            case BlockOperation.Read:
            case BlockOperation.Write:
            {
                bool write = request.Operation == BlockOperation.Write;
                sqe->off = (ulong)offset;
                if ((request.Flags & BlockRequestFlags.ForceUnitAccess) != 0)
                {
                    sqe->rw_flags = RWF_DSYNC;
                }

                if (request.SegmentCount == 1)
                {
                    var segment = request.SegmentPointer[0];
                    nint address = segment.Address + request.Progress;
                    uint length = (uint)(segment.Length - request.Progress);
                    if (TestMaxSubmitBytes > 0 && length > (uint)TestMaxSubmitBytes)
                    {
                        length = (uint)TestMaxSubmitBytes;
                    }

                    sqe->addr = (ulong)address;
                    sqe->len = length;
                    int index = FindRegistered(address, length);
                    if (index >= 0)
                    {
                        sqe->opcode = write ? IORING_OP_WRITE_FIXED : IORING_OP_READ_FIXED;
                        sqe->buf_index = (ushort)index;
                        FixedSubmissions++;
                    }
                    else
                    {
                        sqe->opcode = write ? IORING_OP_WRITE : IORING_OP_READ;
                    }
                }
                else
                {
                    sqe->opcode = write ? IORING_OP_WRITEV : IORING_OP_READV;
                    sqe->addr = (ulong)request.SegmentPointer;
                    sqe->len = (uint)request.SegmentCount;
                }

                break;
            }

            case BlockOperation.Flush:
                sqe->opcode = IORING_OP_FSYNC;
                sqe->fsync_flags = IORING_FSYNC_DATASYNC;
                break;

            case BlockOperation.Discard:
            case BlockOperation.WriteZeroes:
                sqe->opcode = IORING_OP_FALLOCATE;
                sqe->off = (ulong)offset;
                sqe->addr = (ulong)request.Length;
                sqe->len = (uint)(FALLOC_FL_KEEP_SIZE | (request.Operation == BlockOperation.Discard ? FALLOC_FL_PUNCH_HOLE : FALLOC_FL_ZERO_RANGE));
                break;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int FindRegistered(nint address, uint length)
    {
        var registered = _registered;
        for (int i = 0; i < registered.Length; i++)
        {
            var r = registered[i];
            if (address >= r.Address && address + (nint)length <= r.Address + r.Length)
            {
                return i;
            }
        }

        return -1;
    }

    private int Reap()
    {
        int done = 0;
        while (true)
        {
            uint ready = _ring.CqReady;
            if (ready == 0)
            {
                return done;
            }

            // A completion handler may throw (it is the caller's code). Every CQE read so far is handed back to the
            // kernel all the same, so the ring is never left holding one that a later Reap would see again (and
            // deliver to whatever request took its slot since), and the slot was freed before the handler ran.
            uint head = _ring.CqHead;
            uint consumed = 0;
            try
            {
                for (uint i = 0; i < ready; i++)
                {
                    var cqe = _ring.CqeAt(head + i);
                    ulong userData = cqe->user_data;
                    int res = cqe->res;
                    consumed++;
                    if (userData == WakeUserData)
                    {
                        _wakeArmed = false;
                        _woken = true;
                        continue;
                    }

                    if (userData == WakeSourceUserData)
                    {
                        _wakeSourceArmed = false;
                        _woken = true;
                        continue;
                    }

                    var request = _slots[(int)userData]!;
                    if (TestEagainCompletions > 0)
                    {
                        TestEagainCompletions--;
                        res = -Errno.EAGAIN;
                    }

                    if (HandleResult(request, res))
                    {
                        done++;
                    }
                }
            }
            finally
            {
                _ring.AdvanceCq(consumed);
            }
        }
    }

    /// <summary>Completes the request, or resubmits the rest of a short transfer; true when completed.</summary>
    private bool HandleResult(BlockRequest request, int res)
    {
        int slot = request.Slot;
        if (res >= 0 && request.Operation is BlockOperation.Read or BlockOperation.Write)
        {
            int remaining = (int)request.Length - request.Progress;
            if (res < remaining)
            {
                if (res > 0 && request.SegmentCount == 1)
                {
                    request.Progress += res;
                    Prepare(request, slot);
                    return false;
                }

                res = -Errno.EIO; // end of device or a vectored short transfer
            }
            else
            {
                res = (int)request.Length;
            }
        }
        else if (res == -Errno.EAGAIN || res == -Errno.EINTR)
        {
            Prepare(request, slot);
            return false;
        }

        _slots[slot] = null;
        _freeSlots[_freeCount++] = slot;
        var held = _heldHead;
        if (held != null)
        {
            _heldHead = held.Next;
            if (_heldHead == null)
            {
                _heldTail = null;
            }

            held.Next = null;
            Start(held);
        }

        Complete(request, res);
        return true;
    }

    private void Hold(BlockRequest request)
    {
        request.Next = null;
        if (_heldTail == null)
        {
            _heldHead = request;
        }
        else
        {
            _heldTail.Next = request;
        }

        _heldTail = request;
    }

    private void ArmWake()
    {
        if (_wakeSource >= 0 && !_wakeSourceArmed)
        {
            // One-shot POLL_ADD: readiness ends the wait; the owner reads the source and the next wait re-arms it.
            var poll = _ring.GetSqe();
            if (poll != null)
            {
                poll->opcode = IORING_OP_POLL_ADD;
                poll->fd = _wakeSource;
                poll->rw_flags = 0x1; // POLLIN
                poll->user_data = WakeSourceUserData;
                _wakeSourceArmed = true;
            }
        }

        if (_wakeArmed)
        {
            return;
        }

        if (_eventFd == null)
        {
            return; // without an eventfd a wait ends only by completion or timeout
        }

        var sqe = _ring.GetSqe();
        if (sqe == null)
        {
            return;
        }

        sqe->opcode = IORING_OP_READ;
        sqe->fd = _eventFd.Fd;
        sqe->addr = (ulong)_wakeBuffer;
        sqe->len = sizeof(ulong);
        sqe->off = ulong.MaxValue; // eventfds have no position: -1 means the current one
        sqe->user_data = WakeUserData;
        _wakeArmed = true;
    }

    private void ReleaseResources()
    {
        _ring.Dispose(); // closing the ring cancels the pending wake read
        _eventFd?.Dispose();
        if (_wakeBuffer != null && !_wakeArmed)
        {
            // An armed read may still be torn down by the kernel after close: its 8 bytes are left to the process then.
            NativeMemory.Free(_wakeBuffer);
        }

        _wakeBuffer = null;

        if (_fileAddRef)
        {
            _device.File.Handle.DangerousRelease();
            _fileAddRef = false;
        }
    }
}
