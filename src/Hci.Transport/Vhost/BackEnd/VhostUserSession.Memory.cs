using System.Buffers.Binary;
using Hci.Core.Blocks;
using Hci.Core.Native;
using Hci.Transport.Virtio;
using Microsoft.Extensions.Logging;
using Tmds.Linux;

namespace Hci.Transport.Vhost;

/// <summary>The session's memory: the guest's memory table and the in-flight area, mapped from the front-end's files.</summary>
internal sealed unsafe partial class VhostUserSession
{
    private readonly List<(nint Address, nuint Length)> _mappings = [];
    private GuestMemory? _memory;
    private nint _inflight;
    private nint _inflightOffset;
    private nuint _inflightLength;
    private int _inflightQueues;
    private int _inflightQueueSize;

    private bool SetMemTable(ReadOnlySpan<byte> payload, int fdCount)
    {
        Span<(ulong Guest, ulong Size, ulong User, ulong MmapOffset)> table = stackalloc (ulong, ulong, ulong, ulong)[VhostUserMessage.MaxMemTableRegions];
        if (VhostUserMessage.ReadMemTable(payload, fdCount, table, out int count) != VhostUserError.None)
        {
            return false;
        }

        var mapped = new List<(nint, nuint)>();
        var regions = new GuestMemoryRegion[count];
        for (int i = 0; i < count; i++)
        {
            var r = table[i];
            ulong end = r.MmapOffset + r.Size;
            if (!TryMapFile(_fds[i]!, end, $"memory region {i}", out nint p))
            {
                Unmap(mapped);
                return false;
            }

            mapped.Add((p, (nuint)end));
            regions[i] = new GuestMemoryRegion(r.Guest, r.Size, r.User, p + (nint)r.MmapOffset);
        }

        GuestMemory memory;
        try
        {
            memory = new GuestMemory(regions);
        }
        catch (ArgumentException e)
        {
            VhostLog.MemoryTableRefused(_logger, Id, e.Message);
            Unmap(mapped);
            return false;
        }

        // Rings point into the old mappings: stop them, swap, and start them again on the new table.
        var wasStarted = new List<int>();
        for (int i = 0; i < _vrings.Length; i++)
        {
            if (_vrings[i].Started)
            {
                Stop(i);
                wasStarted.Add(i);
            }
        }

        UnmapMemory();
        _memory = memory;
        _mappings.AddRange(mapped);
        foreach (int i in wasStarted)
        {
            TryStart(i);
        }

        return true;
    }

    // The in-flight area is written by the data plane while rings run: it may be replaced only while none does
    // (QEMU sends GET/SET_INFLIGHT_FD before it starts the rings). A front-end that asks at another moment is
    // refused and the area in use stays mapped.
    private bool GetInflightFd(ReadOnlySpan<byte> payload)
    {
        if (payload.Length is not (20 or 24))
        {
            VhostLog.MalformedGetInflightFd(_logger, Id);
            return false;
        }

        Span<byte> reply = stackalloc byte[24];
        reply.Clear();
        if (AnyRingStarted())
        {
            VhostLog.GetInflightFdWhileRunning(_logger, Id);
            return _channel.Reply(VhostUserRequest.GetInflightFd, reply[..payload.Length]);
        }

        int queues = BinaryPrimitives.ReadUInt16LittleEndian(payload[16..]);
        int queueSize = BinaryPrimitives.ReadUInt16LittleEndian(payload[18..]);
        if (queues < 1 || queues > _vrings.Length || queueSize < 1 || queueSize > SplitVirtqueue.MaxSize || !int.IsPow2(queueSize))
        {
            // mmap_size 0 tells the front-end there is no in-flight area.
            return _channel.Reply(VhostUserRequest.GetInflightFd, reply);
        }

        long size = queues * InflightRegion.QueueRegionSize(queueSize);
        FileDescriptorHandle fd;
        fixed (byte* name = "hci-inflight\0"u8)
        {
            fd = new FileDescriptorHandle(LibC.memfd_create(name, LibC.MFD_CLOEXEC | 0x2u /* MFD_ALLOW_SEALING */));
        }

        using (fd)
        {
            // Sealed at its size: the front-end hands this file back with SET_INFLIGHT_FD after a restart, and the
            // back-end maps only memory that cannot shrink under it.
            if (fd.IsInvalid || LibC.ftruncate(fd.Fd, size) != 0 || LibC.fcntl(fd.Fd, LibC.F_ADD_SEALS, LibC.F_SEAL_SHRINK | LibC.F_SEAL_GROW) != 0)
            {
                VhostLog.InflightAreaFailed(_logger, Id, Errno.Describe(LibC.errno));
                return _channel.Reply(VhostUserRequest.GetInflightFd, reply);
            }

            void* p = LibC.mmap(null, (size_t)(ulong)size, LibC.PROT_READ | LibC.PROT_WRITE, LibC.MAP_SHARED, fd.Fd, 0);
            if (p == (void*)-1)
            {
                return _channel.Reply(VhostUserRequest.GetInflightFd, reply);
            }

            UnmapInflight();
            (_inflight, _inflightLength, _inflightQueues, _inflightQueueSize) = ((nint)p, (nuint)size, queues, queueSize);
            BinaryPrimitives.WriteUInt64LittleEndian(reply, (ulong)size);
            BinaryPrimitives.WriteUInt16LittleEndian(reply[16..], (ushort)queues);
            BinaryPrimitives.WriteUInt16LittleEndian(reply[18..], (ushort)queueSize);
            return _channel.Send(VhostUserRequest.GetInflightFd, 0x5, reply[..payload.Length], fd.Fd);
        }
    }

    private bool SetInflightFd(ReadOnlySpan<byte> payload, int fdCount)
    {
        if (payload.Length is not (20 or 24) || fdCount != 1)
        {
            return false;
        }

        if (AnyRingStarted())
        {
            VhostLog.SetInflightFdWhileRunning(_logger, Id);
            return false;
        }

        ulong size = BinaryPrimitives.ReadUInt64LittleEndian(payload);
        ulong offset = BinaryPrimitives.ReadUInt64LittleEndian(payload[8..]);
        int queues = BinaryPrimitives.ReadUInt16LittleEndian(payload[16..]);
        int queueSize = BinaryPrimitives.ReadUInt16LittleEndian(payload[18..]);
        if (queues < 1 || queues > _vrings.Length || queueSize < 1 || queueSize > SplitVirtqueue.MaxSize || !int.IsPow2(queueSize)
            || size < (ulong)(queues * InflightRegion.QueueRegionSize(queueSize)) || size > (1UL << 32) || offset > (1UL << 40))
        {
            return false;
        }

        if (!TryMapFile(_fds[0]!, offset + size, "the in-flight area", out nint p))
        {
            return false;
        }

        UnmapInflight();
        _inflight = p;
        _inflightLength = (nuint)(offset + size);
        _inflightQueues = queues;
        _inflightQueueSize = queueSize;
        _inflightOffset = (nint)offset;
        return true;
    }

    // The ring's part of the in-flight area, and what a previous back-end left in flight there: everything before
    // those heads was answered, so the ring was read up to the used index plus what is in flight.
    private InflightRegion? RecoverInflight(int index, int size, byte* used, ref ushort lastAvail, out ushort[]? resubmit)
    {
        resubmit = null;
        if (_inflight == 0 || index >= _inflightQueues || _inflightQueueSize != size)
        {
            return null;
        }

        var inflight = new InflightRegion(_inflight + _inflightOffset + (nint)(index * InflightRegion.QueueRegionSize(size)), size);
        ushort usedIdx = Volatile.Read(ref *SplitRing.UsedIndex(used));
        var heads = new ushort[size];
        int n = inflight.Recover(usedIdx, heads);
        if (n > 0)
        {
            lastAvail = (ushort)(usedIdx + n);
            resubmit = heads[..n];
            VhostLog.InflightResumed(_logger, Id, index, n);
        }

        return inflight;
    }

    // Maps [0, end) of a file the front-end sent, only if the file really has those bytes: touching a page past
    // its end would kill this process (SIGBUS). The file is also sealed against shrinking where it allows that.
    private bool TryMapFile(FileDescriptorHandle file, ulong end, string what, out nint address)
    {
        address = 0;
        int fd = file.Fd;
        long fileSize = LibC.lseek(fd, 0, LibC.SEEK_END);
        if (fileSize < 0 || (ulong)fileSize < end || end > (ulong)nint.MaxValue)
        {
            VhostLog.SharedFileTooShort(_logger, Id, what, end, fileSize);
            return false;
        }

        // The file must stay at least this long while it is mapped: sealed against shrinking (QEMU's memfd
        // backend seals its own; ours is added where the memfd allows it), or explicitly trusted.
        LibC.fcntl(fd, LibC.F_ADD_SEALS, LibC.F_SEAL_SHRINK);
        int seals = LibC.fcntl(fd, LibC.F_GET_SEALS);
        if ((seals < 0 || (seals & LibC.F_SEAL_SHRINK) == 0) && !_allowUnsealedMemory)
        {
            VhostLog.SharedFileUnsealed(_logger, Id, what);
            return false;
        }

        void* p = LibC.mmap(null, (size_t)end, LibC.PROT_READ | LibC.PROT_WRITE, LibC.MAP_SHARED | LibC.MAP_NORESERVE, fd, 0);
        if (p == (void*)-1)
        {
            VhostLog.MapFailed(_logger, Id, what, Errno.Describe(LibC.errno));
            return false;
        }

        address = (nint)p;
        return true;
    }

    private void UnmapMemory()
    {
        _memory = null;
        Unmap(_mappings);
        _mappings.Clear();
    }

    private void UnmapInflight()
    {
        if (_inflight != 0)
        {
            LibC.munmap((void*)_inflight, (size_t)(ulong)_inflightLength);
            _inflight = 0;
            _inflightOffset = 0;
        }
    }

    private static void Unmap(List<(nint Address, nuint Length)> mappings)
    {
        foreach (var (address, length) in mappings)
        {
            LibC.munmap((void*)address, (size_t)(ulong)length);
        }
    }
}
