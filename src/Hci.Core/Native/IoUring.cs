using System.Runtime.CompilerServices;
using System.Runtime.Versioning;
using Hci.Core.Blocks;
using Hci.Core.Modules;
using Tmds.Linux;
using static Hci.Core.Native.Interop;

namespace Hci.Core.Native;

/// <summary>
/// One io_uring instance: the mapped submission and completion rings, registration, and io_uring_enter.
/// Owned by one thread; only <see cref="FileDescriptorHandle"/> disposal is thread-safe.
/// </summary>
[SupportedOSPlatform("linux")]
internal sealed unsafe class IoUring : IDisposable
{
    private readonly FileDescriptorHandle _ring;
    private readonly int _ringFd;
    private void* _sqRingPtr;
    private nuint _sqRingSize;
    private void* _cqRingPtr;
    private nuint _cqRingSize;
    private io_uring_sqe* _sqes;
    private nuint _sqesSize;

    private uint* _sqHead;
    private uint* _sqTail;
    private uint _sqMask;
    private uint* _sqArray;
    private uint* _cqHead;
    private uint* _cqTail;
    private uint _cqMask;
    private io_uring_cqe* _cqes;

    private uint _sqLocalTail;
    private uint _sqSubmitted;

    public IoUring(uint entries, uint cqEntries, uint flags)
    {
        io_uring_params p = default;
        p.flags = flags | IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP;
        p.cq_entries = cqEntries;
        int fd = LibC.io_uring_setup(entries, &p);
        if (fd < 0)
        {
            int errno = LibC.errno;
            throw new IoUringUnavailableException(errno, $"io_uring_setup failed: {Errno.Describe(errno)}");
        }

        _ring = new FileDescriptorHandle(fd);
        _ringFd = fd;
        try
        {
            Features = p.features;
            if ((p.features & IORING_FEAT_NODROP) == 0 || (p.features & IORING_FEAT_SUBMIT_STABLE) == 0)
            {
                throw new IoUringUnavailableException(Errno.ENOSYS, "the kernel's io_uring lacks IORING_FEAT_NODROP or IORING_FEAT_SUBMIT_STABLE (Linux 5.5 or later is needed)");
            }

            SqEntries = p.sq_entries;
            CqEntries = p.cq_entries;
            _sqRingSize = (nuint)(p.sq_off.array + (p.sq_entries * sizeof(uint)));
            _cqRingSize = (nuint)(p.cq_off.cqes + (p.cq_entries * (uint)sizeof(io_uring_cqe)));
            bool single = (p.features & IORING_FEAT_SINGLE_MMAP) != 0;
            if (single)
            {
                _sqRingSize = _cqRingSize = Math.Max(_sqRingSize, _cqRingSize);
            }

            _sqRingPtr = Map(_sqRingSize, IORING_OFF_SQ_RING);
            _cqRingPtr = single ? _sqRingPtr : Map(_cqRingSize, IORING_OFF_CQ_RING);
            _sqesSize = (nuint)(p.sq_entries * (uint)sizeof(io_uring_sqe));
            _sqes = (io_uring_sqe*)Map(_sqesSize, IORING_OFF_SQES);

            byte* sq = (byte*)_sqRingPtr;
            _sqHead = (uint*)(sq + p.sq_off.head);
            _sqTail = (uint*)(sq + p.sq_off.tail);
            _sqMask = *(uint*)(sq + p.sq_off.ring_mask);
            _sqArray = (uint*)(sq + p.sq_off.array);
            byte* cq = (byte*)_cqRingPtr;
            _cqHead = (uint*)(cq + p.cq_off.head);
            _cqTail = (uint*)(cq + p.cq_off.tail);
            _cqMask = *(uint*)(cq + p.cq_off.ring_mask);
            _cqes = (io_uring_cqe*)(cq + p.cq_off.cqes);

            // Identity map of the SQ index array: slot i always holds sqe i.
            for (uint i = 0; i < p.sq_entries; i++)
            {
                _sqArray[i] = i;
            }

            _sqLocalTail = *_sqTail;
            _sqSubmitted = _sqLocalTail;
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public uint Features { get; }

    public uint SqEntries { get; }

    public uint CqEntries { get; }

    public int RingFd => _ringFd;

    /// <summary>SQEs prepared and not yet handed to the kernel by <see cref="Enter"/>.</summary>
    public uint PendingSubmissions => _sqLocalTail - _sqSubmitted;

    /// <summary>The next SQE, zeroed; null when the submission ring is full.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public io_uring_sqe* GetSqe()
    {
        uint head = Volatile.Read(ref *_sqHead);
        if (_sqLocalTail - head >= SqEntries)
        {
            return null;
        }

        var sqe = &_sqes[_sqLocalTail & _sqMask];
        Unsafe.InitBlockUnaligned(sqe, 0, (uint)sizeof(io_uring_sqe));
        _sqLocalTail++;
        return sqe;
    }

    /// <summary>Submits prepared SQEs and optionally waits for completions.</summary>
    /// <param name="minComplete">Completions to wait for (0: do not wait).</param>
    /// <param name="timeoutMilliseconds">Longest wait when waiting; infinite when negative.</param>
    /// <param name="getEvents">Enter with GETEVENTS even without waiting, to run deferred completions.</param>
    /// <returns>0 or a negative errno (ETIME on timeout, EINTR when interrupted).</returns>
    public int Enter(uint minComplete, int timeoutMilliseconds, bool getEvents = false)
    {
        uint toSubmit = _sqLocalTail - _sqSubmitted;
        Volatile.Write(ref *_sqTail, _sqLocalTail);
        uint flags = minComplete > 0 || getEvents ? IORING_ENTER_GETEVENTS : 0;
        int rc;
        if (minComplete > 0 && timeoutMilliseconds >= 0)
        {
            kernel_timespec ts = new() { tv_sec = timeoutMilliseconds / 1000, tv_nsec = (timeoutMilliseconds % 1000) * 1_000_000L };
            io_uring_getevents_arg arg = new() { ts = (ulong)&ts };
            rc = (int)LibC.syscall(SYS_io_uring_enter, _ringFd, toSubmit, minComplete, flags | IORING_ENTER_EXT_ARG, &arg, sizeof(io_uring_getevents_arg));
        }
        else
        {
            rc = LibC.io_uring_enter(_ringFd, toSubmit, minComplete, flags, null);
        }

        int errno = rc < 0 ? LibC.errno : 0;
        // Without SQPOLL the kernel consumes SQEs inside io_uring_enter and publishes its head there.
        _sqSubmitted = Volatile.Read(ref *_sqHead);
        return -errno;
    }

    /// <summary>Number of completions ready.</summary>
    public uint CqReady => Volatile.Read(ref *_cqTail) - *_cqHead;

    /// <summary>Gives <paramref name="count"/> consumed completions back to the kernel.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void AdvanceCq(uint count) => Volatile.Write(ref *_cqHead, *_cqHead + count);

    public io_uring_cqe* CqeAt(uint head) => &_cqes[head & _cqMask];

    public uint CqHead => *_cqHead;

    public int Register(uint opcode, void* arg, uint count)
    {
        int rc = LibC.io_uring_register(_ringFd, opcode, arg, count);
        return rc < 0 ? -LibC.errno : rc;
    }

    /// <summary>Asks the kernel which opcodes it supports.</summary>
    public bool[] ProbeOps()
    {
        const int maxOps = 256;
        int size = sizeof(io_uring_probe) + (maxOps * sizeof(io_uring_probe_op));
        byte* buffer = stackalloc byte[size];
        new Span<byte>(buffer, size).Clear();
        var supported = new bool[maxOps];
        if (Register(IORING_REGISTER_PROBE, buffer, maxOps) < 0)
        {
            return supported;
        }

        var probe = (io_uring_probe*)buffer;
        var ops = (io_uring_probe_op*)(buffer + sizeof(io_uring_probe));
        for (int i = 0; i < probe->ops_len && i < maxOps; i++)
        {
            supported[ops[i].op] = (ops[i].flags & IO_URING_OP_SUPPORTED) != 0;
        }

        return supported;
    }

    public void Dispose()
    {
        if (_sqes != null)
        {
            LibC.munmap(_sqes, (size_t)(ulong)_sqesSize);
            _sqes = null;
        }

        if (_cqRingPtr != null && _cqRingPtr != _sqRingPtr)
        {
            LibC.munmap(_cqRingPtr, (size_t)(ulong)_cqRingSize);
        }

        _cqRingPtr = null;
        if (_sqRingPtr != null)
        {
            LibC.munmap(_sqRingPtr, (size_t)(ulong)_sqRingSize);
            _sqRingPtr = null;
        }

        _ring.Dispose();
    }

    private void* Map(nuint size, ulong offset)
    {
        void* ptr = LibC.mmap(null, (size_t)(ulong)size, LibC.PROT_READ | LibC.PROT_WRITE, LibC.MAP_SHARED | LibC.MAP_POPULATE, _ringFd, (long)offset);
        if (ptr == (void*)-1)
        {
            int errno = LibC.errno;
            throw new IoUringUnavailableException(errno, $"mapping the io_uring rings failed: {Errno.Describe(errno)}");
        }

        return ptr;
    }
}
