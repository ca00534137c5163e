using Hci.Core.Blocks;
using Hci.Core.Native;
using Hci.Transport.Virtio;
using Tmds.Linux;

namespace Hci.Transport.Vhost;

/// <summary>
/// A <see cref="BlockQueue"/> of <see cref="VhostUserBlkClient"/>: owns one virtqueue. Submit writes the request's
/// indirect table and publishes it on the available ring; Poll kicks once for the batch (when the back-end asks for
/// kicks), reaps the used ring and, when it must wait, sleeps on the call eventfd and on the owner's wake source
/// (<see cref="TrySetWakeSource"/>): a reactor sleeps on it with its other events in one wait.
/// </summary>
internal sealed unsafe class ClientQueue : BlockQueue
{
    private const ushort FlagNext = SplitRing.DescriptorNext;
    private const ushort FlagWrite = SplitRing.DescriptorWrite;
    private const ushort FlagIndirect = SplitRing.DescriptorIndirect;
    private const int ENOTCONN = 107;

    private readonly VhostUserBlkClient _client;
    private readonly ClientVirtqueue _vq;
    private readonly BlockRequest?[] _slots;
    private readonly bool[] _staged;
    private readonly int[] _free;
    private readonly FileDescriptorHandle _epoll;
    private readonly FileDescriptorHandle _wake;
    private readonly ulong _sharedStart;
    private readonly ulong _sharedEnd;
    private int _freeCount;
    private readonly Queue<BlockRequest> _held = new(256);
    private ushort _availIdx;
    private ushort _lastUsed;
    private ushort _kickedAt;
    private volatile bool _woken;
    private int _wakeSource = -1;

    public ClientQueue(VhostUserBlkClient client, ClientVirtqueue vq)
        : base(client)
    {
        _client = client;
        _vq = vq;
        _slots = new BlockRequest?[vq.Size];
        _staged = new bool[vq.Size];
        _free = new int[vq.Size];
        for (int i = 0; i < vq.Size; i++)
        {
            _free[i] = vq.Size - 1 - i;
        }

        _freeCount = vq.Size;
        _availIdx = Volatile.Read(ref *SplitRing.AvailIndex((byte*)vq.Avail));
        _lastUsed = vq.UsedIndex;
        _kickedAt = _availIdx;
        var shared = client.SharedMemory;
        _sharedStart = (ulong)shared.Address;
        _sharedEnd = _sharedStart + (ulong)shared.Length;
        _wake = new FileDescriptorHandle(LibC.eventfd(0, LibC.EFD_CLOEXEC | LibC.EFD_NONBLOCK));
        _epoll = new FileDescriptorHandle(LibC.epoll_create1(LibC.EPOLL_CLOEXEC));
        if (_wake.IsInvalid || _epoll.IsInvalid)
        {
            int errno = LibC.errno;
            _wake.Dispose();
            _epoll.Dispose();
            throw new IOException($"Creating the queue's wait set failed: {Errno.Describe(errno)}.");
        }

        epoll_event ev = default;
        ev.events = LibC.EPOLLIN;
        ev.data.fd = vq.Call.Fd;
        LibC.epoll_ctl(_epoll.Fd, LibC.EPOLL_CTL_ADD, vq.Call.Fd, &ev);
        ev.data.fd = _wake.Fd;
        LibC.epoll_ctl(_epoll.Fd, LibC.EPOLL_CTL_ADD, _wake.Fd, &ev);
        vq.WakeOwner = Wake;
    }

    public override void Wake()
    {
        _woken = true;
        ulong one = 1;
        LibC.write(_wake.Fd, &one, sizeof(ulong));
    }

    protected override void SubmitCore(BlockRequest request)
    {
        if (_vq.Failed)
        {
            CompleteLater(request, -ENOTCONN);
            return;
        }

        if (_freeCount == 0)
        {
            _held.Enqueue(request);
            return;
        }

        Start(request, _free[--_freeCount]);
    }

    /// <summary>
    /// Makes a waiting poll also end when <paramref name="fd"/> (a reactor's epoll set) is ready: it joins this
    /// queue's own wait set, so a reactor sleeps on its kicks, sockets and this virtqueue in one wait.
    /// </summary>
    /// <param name="fd">The descriptor, or -1 to stop watching it.</param>
    /// <returns>True when watched.</returns>
    public override bool TrySetWakeSource(int fd)
    {
        if (_wakeSource >= 0)
        {
            LibC.epoll_ctl(_epoll.Fd, LibC.EPOLL_CTL_DEL, _wakeSource, null);
            _wakeSource = -1;
        }

        if (fd < 0)
        {
            return true;
        }

        epoll_event ev = default;
        ev.events = LibC.EPOLLIN;
        ev.data.fd = fd;
        if (LibC.epoll_ctl(_epoll.Fd, LibC.EPOLL_CTL_ADD, fd, &ev) != 0)
        {
            return false;
        }

        _wakeSource = fd;
        return true;
    }

    // Reaps what the back-end has answered; when it must wait, asks for an interrupt at the next completion (in
    // polling mode too: interrupts are off only while the owner keeps looking, and the owner's poll window decides
    // how long that is), looks once more, and sleeps on the call eventfd, a wake, or the wake source.
    protected override int PollCore(int minCompletions, int timeoutMilliseconds)
    {
        if (_vq.Failed)
        {
            return FailAll();
        }

        KickIfWanted();
        int done = Reap();
        if (timeoutMilliseconds == Timeout.Infinite)
        {
            minCompletions = Math.Min(minCompletions, InFlight + done);
        }

        long deadline = timeoutMilliseconds < 0 ? long.MaxValue : Environment.TickCount64 + timeoutMilliseconds;
        epoll_event* events = stackalloc epoll_event[3];
        bool armed = false;
        while (done < minCompletions && timeoutMilliseconds != 0 && !_vq.Failed)
        {
            // A wake is remembered until a poll consumes it, whether it came before the poll or during it.
            if (_woken)
            {
                _woken = false;
                ulong drained;
                LibC.read(_wake.Fd, &drained, sizeof(ulong));
                break;
            }

            ArmInterrupt();
            armed = true;
            Interlocked.MemoryBarrier();
            if (_vq.UsedIndex == _lastUsed)
            {
                long left = deadline == long.MaxValue ? -1 : deadline - Environment.TickCount64;
                if (left is < 0 and not -1)
                {
                    break;
                }

                int n = LibC.epoll_wait(_epoll.Fd, events, 3, (int)Math.Min(left, int.MaxValue));
                bool source = false;
                ulong value;
                for (int i = 0; i < n; i++)
                {
                    int fd = events[i].data.fd;
                    if (fd == _wake.Fd)
                    {
                        continue; // consumed at the top of the loop, with the flag
                    }

                    if (fd == _wakeSource)
                    {
                        source = true; // the owner reads it
                        continue;
                    }

                    LibC.read(fd, &value, sizeof(ulong));
                }

                if (source || (n == 0 && left >= 0))
                {
                    done += Reap();
                    break;
                }
            }

            done += Reap();
        }

        if (armed && _vq.Polling)
        {
            DisarmInterrupt();
        }

        return _vq.Failed ? done + FailAll() : done;
    }

    private void ArmInterrupt()
    {
        if (_vq.EventIdx)
        {
            Volatile.Write(ref *SplitRing.UsedEvent((byte*)_vq.Avail, _vq.Size), _lastUsed);
        }
        else if (_vq.Polling)
        {
            Volatile.Write(ref *SplitRing.AvailFlags((byte*)_vq.Avail), (ushort)0);
        }
    }

    // Polling mode, the wait over: the back-end is asked for no interrupts again.
    private void DisarmInterrupt()
    {
        if (_vq.EventIdx)
        {
            Volatile.Write(ref *SplitRing.UsedEvent((byte*)_vq.Avail, _vq.Size), (ushort)(_lastUsed + 0x7FFF));
        }
        else
        {
            Volatile.Write(ref *SplitRing.AvailFlags((byte*)_vq.Avail), SplitRing.AvailNoInterrupt);
        }
    }

    protected override void Dispose(bool disposing)
    {
        _vq.WakeOwner = null;
        _wakeSource = -1;
        _epoll.Dispose();
        _wake.Dispose();
        _client.Release(_vq);
    }

    private void Start(BlockRequest request, int slot)
    {
        byte* meta = _vq.Meta(slot);
        var table = (VirtqDescriptor*)(meta + 64);
        int n = 0;
        uint type;
        bool staged = false;
        meta[16] = 0xFF; // status: overwritten by the back-end
        switch (request.Operation)
        {
            case BlockOperation.Read:
            case BlockOperation.Write:
            {
                bool read = request.Operation == BlockOperation.Read;
                type = read ? VirtioBlk.TypeIn : VirtioBlk.TypeOut;
                ushort dataFlags = read ? (ushort)(FlagNext | FlagWrite) : FlagNext;
                n = 1;
                if (!DirectSegments(request, table, ref n, dataFlags))
                {
                    // Stage: one copy into this entry's buffer in shared memory.
                    staged = true;
                    n = 1;
                    byte* staging = _vq.Staging(slot);
                    if (!read)
                    {
                        int at = 0;
                        foreach (var s in request.Segments)
                        {
                            new ReadOnlySpan<byte>((void*)s.Address, (int)s.Length).CopyTo(new Span<byte>(staging + at, (int)s.Length));
                            at += (int)s.Length;
                        }
                    }

                    long left = request.Length;
                    long offset = 0;
                    while (left > 0)
                    {
                        int chunk = (int)Math.Min(left, _vq.SizeMax);
                        table[n++] = new VirtqDescriptor(_vq.Address(staging + offset), (uint)chunk, dataFlags);
                        offset += chunk;
                        left -= chunk;
                    }
                }

                break;
            }

            case BlockOperation.Flush:
                type = VirtioBlk.TypeFlush;
                n = 1;
                break;
            default:
            {
                type = request.Operation == BlockOperation.Discard ? VirtioBlk.TypeDiscard : VirtioBlk.TypeWriteZeroes;
                byte* range = meta + 32;
                *(ulong*)range = (ulong)(request.Offset / VirtioBlk.SectorSize);
                *(uint*)(range + 8) = (uint)(request.Length / VirtioBlk.SectorSize);
                *(uint*)(range + 12) = 0;
                n = 1;
                table[n++] = new VirtqDescriptor(_vq.Address(range), VirtioBlk.RangeSize, FlagNext);
                break;
            }
        }

        *(uint*)meta = type;
        *(uint*)(meta + 4) = 0;
        *(ulong*)(meta + 8) = request.Operation is BlockOperation.Read or BlockOperation.Write ? (ulong)(request.Offset / VirtioBlk.SectorSize) : 0;
        table[0] = new VirtqDescriptor(_vq.Address(meta), VirtioBlk.HeaderSize, FlagNext);
        table[n++] = new VirtqDescriptor(_vq.Address(meta + 16), 1, FlagWrite);
        for (int i = 0; i < n - 1; i++)
        {
            table[i].Next = (ushort)(i + 1);
        }

        ((VirtqDescriptor*)_vq.Descriptors)[slot] = new VirtqDescriptor(_vq.Address(table), (uint)(n * sizeof(VirtqDescriptor)), FlagIndirect);
        _slots[slot] = request;
        _staged[slot] = staged;
        var avail = (byte*)_vq.Avail;
        *SplitRing.AvailEntry(avail, _availIdx & (_vq.Size - 1)) = (ushort)slot;
        _availIdx++;
        Volatile.Write(ref *SplitRing.AvailIndex(avail), _availIdx); // release: the table and entry before the index
    }

    // Buffers already in shared memory go as they are, split at the back-end's segment size limit.
    private bool DirectSegments(BlockRequest request, VirtqDescriptor* table, ref int n, ushort flags)
    {
        int limit = _vq.TableEntries - 1;
        foreach (var s in request.Segments)
        {
            ulong start = (ulong)s.Address;
            ulong length = (ulong)s.Length;
            if (start < _sharedStart || start + length > _sharedEnd)
            {
                return false;
            }

            while (length > 0)
            {
                uint chunk = (uint)Math.Min(length, (ulong)_vq.SizeMax);
                if (n >= limit)
                {
                    return false;
                }

                table[n++] = new VirtqDescriptor(start - _sharedStart, chunk, flags);
                start += chunk;
                length -= chunk;
            }
        }

        return true;
    }

    private void KickIfWanted()
    {
        ushort now = _availIdx;
        ushort old = _kickedAt;
        if (now == old)
        {
            return;
        }

        _kickedAt = now;
        Interlocked.MemoryBarrier(); // the avail index before the back-end's wish is read
        bool kick;
        if (_vq.EventIdx)
        {
            ushort availEvent = Volatile.Read(ref *SplitRing.AvailEvent((byte*)_vq.Used, _vq.Size));
            kick = SplitRing.NeedEvent(availEvent, now, old);
        }
        else
        {
            kick = (Volatile.Read(ref *SplitRing.UsedFlags((byte*)_vq.Used)) & SplitRing.UsedNoNotify) == 0;
        }

        if (kick)
        {
            _vq.KickNow();
        }
    }

    private int Reap()
    {
        int done = 0;
        ushort usedIdx = _vq.UsedIndex;
        while (_lastUsed != usedIdx)
        {
            var entry = SplitRing.UsedEntry((byte*)_vq.Used, _lastUsed & (_vq.Size - 1));
            uint id = Volatile.Read(ref entry->Id);
            _lastUsed++;
            if (id >= (uint)_slots.Length || _slots[id] is not { } request)
            {
                continue; // a back-end returning an entry that is not in flight: ignore it
            }

            _slots[id] = null;
            byte status = _vq.Meta((int)id)[16];
            int result;
            var error = BlockError.None;
            switch (status)
            {
                case VirtioBlk.StatusOk:
                    result = request.Operation is BlockOperation.Read or BlockOperation.Write ? (int)request.Length : 0;
                    if (_staged[id] && request.Operation == BlockOperation.Read)
                    {
                        byte* staging = _vq.Staging((int)id);
                        int at = 0;
                        foreach (var s in request.Segments)
                        {
                            new ReadOnlySpan<byte>(staging + at, (int)s.Length).CopyTo(new Span<byte>((void*)s.Address, (int)s.Length));
                            at += (int)s.Length;
                        }
                    }

                    break;
                case VirtioBlk.StatusUnsupported:
                    result = -Errno.EOPNOTSUPP;
                    error = BlockError.Unsupported;
                    break;
                default:
                    result = -Errno.EIO;
                    break;
            }

            _free[_freeCount++] = (int)id;
            Complete(request, result, error);
            done++;
            if (usedIdx == _lastUsed)
            {
                usedIdx = _vq.UsedIndex;
            }
        }

        while (_freeCount > 0 && _held.TryDequeue(out var next))
        {
            Start(next, _free[--_freeCount]);
        }

        if (_vq.Polling && _vq.EventIdx)
        {
            // Keep the back-end's interrupt threshold far ahead: polling needs none.
            Volatile.Write(ref *SplitRing.UsedEvent((byte*)_vq.Avail, _vq.Size), (ushort)(_lastUsed + 0x7FFF));
        }

        if (_availIdx != _kickedAt)
        {
            KickIfWanted();
        }

        return done;
    }

    private int FailAll()
    {
        int done = 0;
        for (int i = 0; i < _slots.Length; i++)
        {
            if (_slots[i] is { } request)
            {
                _slots[i] = null;
                Complete(request, -ENOTCONN);
                done++;
            }
        }

        while (_held.TryDequeue(out var next))
        {
            Complete(next, -ENOTCONN);
            done++;
        }

        return done;
    }
}
