using System.Buffers.Binary;
using System.Numerics;
using Hci.Core.Blocks;
using Hci.Transport.Virtio;
using Microsoft.Extensions.Logging;
using Tmds.Linux;

namespace Hci.Transport.Vhost;

/// <summary>
/// One front-end connection: the vhost-user control plane on its own thread. It negotiates features, maps the
/// guest's memory, configures rings and hands running rings to the server's reactors. Every message is checked
/// first; a malformed one is refused (REPLY_ACK when asked) and a broken stream ends the session, which stops
/// every ring (after its requests complete) and releases every mapping and descriptor.
/// </summary>
internal sealed unsafe class VhostUserBlkSession : IDisposable
{
    internal const ulong ProtocolFeaturesBit = 1UL << 30;
    internal const ulong ProtocolMq = 1UL << 0;
    internal const ulong ProtocolReplyAck = 1UL << 3;
    internal const ulong ProtocolConfig = 1UL << 9;
    internal const ulong ProtocolInflight = 1UL << 12;
    internal const ulong OfferedProtocol = ProtocolMq | ProtocolReplyAck | ProtocolConfig | ProtocolInflight;

    private readonly VhostUserBlkServer _server;
    private readonly VhostUserChannel _channel;
    private readonly ILogger _logger;
    private readonly VirtioBlkConfig _config;
    private readonly Vring[] _vrings;
    private readonly ulong _offered;
    private readonly byte[] _payload = new byte[VhostUserHeader.MaxPayload];
    private readonly int[] _fds = new int[VhostUserChannel.MaxFds];
    private readonly List<(nint Address, nuint Length)> _mappings = [];
    private ulong _features;
    private ulong _protocol;
    private GuestMemory? _memory;
    private nint _inflight;
    private nint _inflightOffset;
    private nuint _inflightLength;
    private int _inflightQueues;
    private int _inflightQueueSize;
    private int _disposed;

    public VhostUserBlkSession(VhostUserBlkServer server, int fd, int id, ILogger logger)
    {
        _server = server;
        _channel = new VhostUserChannel(fd);
        Id = id;
        _logger = logger;
        var device = server.Device;
        _config = new VirtioBlkConfig(device.Geometry, device.Capabilities, server.Options.MaxQueues, server.Options.ReadOnly);
        _offered = _config.Features | ProtocolFeaturesBit;
        _vrings = new Vring[server.Options.MaxQueues];
        for (int i = 0; i < _vrings.Length; i++)
        {
            _vrings[i] = new Vring();
        }
    }

    public int Id { get; }

    /// <summary>Serves messages until the front-end disconnects or breaks the protocol, then tears down.</summary>
    public void Run()
    {
        try
        {
            while (true)
            {
                _fds.AsSpan().Fill(-1);
                var error = _channel.Receive(_payload, _fds, out var header, out int fdCount);
                if (error == VhostUserError.ShortHeader)
                {
                    _logger.LogInformation("vhost-user session {Id} on {Socket}: front-end disconnected.", Id, _server.Options.SocketPath);
                    return;
                }

                if (error != VhostUserError.None)
                {
                    _logger.LogWarning("vhost-user session {Id}: closing after a malformed message ({Error}, request {Request}).", Id, error, header.Request);
                    return;
                }

                bool keep;
                try
                {
                    keep = Handle(header, _payload.AsSpan(0, (int)header.Size), fdCount);
                }
                finally
                {
                    for (int i = 0; i < fdCount; i++)
                    {
                        if (_fds[i] >= 0)
                        {
                            LibC.close(_fds[i]);
                        }
                    }
                }

                if (!keep)
                {
                    return;
                }
            }
        }
        catch (Exception e)
        {
            _logger.LogError(e, "vhost-user session {Id}: failed; closing it.", Id);
        }
        finally
        {
            Dispose();
        }
    }

    /// <summary>Interrupts a blocked receive (server shutdown); the session then tears itself down.</summary>
    public void Shutdown() => LibC.shutdown(_channel.Fd, LibC.SHUT_RDWR);

    /// <summary>Stops every ring and releases mappings and descriptors.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        for (int i = 0; i < _vrings.Length; i++)
        {
            Stop(i);
            _vrings[i].CloseFds();
        }

        UnmapMemory();
        UnmapInflight();
        _channel.Dispose();
        _server.OnSessionClosed(this);
    }

    private bool NeedAck(in VhostUserHeader header) => header.NeedReply && (_protocol & ProtocolReplyAck) != 0;

    private bool Ack(in VhostUserHeader header, bool ok)
    {
        if (!ok)
        {
            _logger.LogDebug("vhost-user session {Id}: refused {Request}.", Id, header.Request);
        }

        if (!NeedAck(header))
        {
            return true;
        }

        Span<byte> p = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(p, ok ? 0UL : 1UL);
        return _channel.Reply(header.Request, p);
    }

    private bool ReplyU64(VhostUserRequest request, ulong value)
    {
        Span<byte> p = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(p, value);
        return _channel.Reply(request, p);
    }

    private int TakeFd(int i)
    {
        int fd = _fds[i];
        _fds[i] = -1;
        return fd;
    }

    private bool Handle(in VhostUserHeader header, ReadOnlySpan<byte> payload, int fdCount)
    {
        switch (header.Request)
        {
            case VhostUserRequest.GetFeatures:
                return ReplyU64(header.Request, _offered);
            case VhostUserRequest.SetFeatures:
            {
                bool ok = VhostUserMessage.ReadU64(payload, out ulong value) == VhostUserError.None && (value & ~_offered) == 0 && fdCount == 0;
                if (ok)
                {
                    _features = value;
                    _config.Negotiate(value);
                }

                return Ack(header, ok);
            }

            case VhostUserRequest.GetProtocolFeatures:
                return ReplyU64(header.Request, OfferedProtocol);
            case VhostUserRequest.SetProtocolFeatures:
            {
                bool ok = VhostUserMessage.ReadU64(payload, out ulong value) == VhostUserError.None && (value & ~OfferedProtocol) == 0;
                if (ok)
                {
                    _protocol = value;
                }

                return Ack(header, ok);
            }

            case VhostUserRequest.GetQueueNum:
                return ReplyU64(header.Request, (ulong)_vrings.Length);
            case VhostUserRequest.SetOwner:
                return Ack(header, true);
            case VhostUserRequest.ResetOwner:
                for (int i = 0; i < _vrings.Length; i++)
                {
                    Stop(i);
                }

                _features = 0;
                return Ack(header, true);
            case VhostUserRequest.SetMemTable:
                return Ack(header, SetMemTable(payload, fdCount));
            case VhostUserRequest.SetVringNum:
            {
                bool ok = VhostUserMessage.ReadVringState(payload, _vrings.Length, out int index, out uint num) == VhostUserError.None
                    && num is >= 1 and <= SplitVirtqueue.MaxSize && BitOperations.IsPow2(num) && _vrings[index].Running == null;
                if (ok)
                {
                    _vrings[index].Size = (int)num;
                }

                return Ack(header, ok);
            }

            case VhostUserRequest.SetVringAddr:
            {
                bool ok = VhostUserMessage.ReadVringAddr(payload, _vrings.Length, out int index, out ulong desc, out ulong used, out ulong avail) == VhostUserError.None
                    && _vrings[index].Running == null;
                if (ok)
                {
                    var v = _vrings[index];
                    (v.Descriptors, v.Used, v.Avail, v.AddrSet) = (desc, used, avail, true);
                    TryStart(index);
                }

                return Ack(header, ok);
            }

            case VhostUserRequest.SetVringBase:
            {
                bool ok = VhostUserMessage.ReadVringState(payload, _vrings.Length, out int index, out uint num) == VhostUserError.None
                    && num <= ushort.MaxValue && _vrings[index].Running == null;
                if (ok)
                {
                    _vrings[index].Base = (ushort)num;
                }

                return Ack(header, ok);
            }

            case VhostUserRequest.GetVringBase:
            {
                if (VhostUserMessage.ReadVringState(payload, _vrings.Length, out int index, out _) != VhostUserError.None)
                {
                    _logger.LogWarning("vhost-user session {Id}: GET_VRING_BASE for a queue that does not exist; closing.", Id);
                    return false;
                }

                Stop(index);
                var v = _vrings[index];
                v.CloseKick();
                Span<byte> p = stackalloc byte[8];
                BinaryPrimitives.WriteUInt32LittleEndian(p, (uint)index);
                BinaryPrimitives.WriteUInt32LittleEndian(p[4..], v.Base);
                return _channel.Reply(header.Request, p);
            }

            case VhostUserRequest.SetVringKick:
            {
                if (VhostUserMessage.ReadVringFd(payload, fdCount, _vrings.Length, out int index, out bool noFd) != VhostUserError.None)
                {
                    return Ack(header, false);
                }

                Stop(index);
                var v = _vrings[index];
                v.CloseKick();
                v.Kick = noFd ? -1 : TakeFd(0);
                if (v.Kick >= 0)
                {
                    int flags = LibC.fcntl(v.Kick, LibC.F_GETFL);
                    LibC.fcntl(v.Kick, LibC.F_SETFL, flags | LibC.O_NONBLOCK);
                }

                v.KickSet = true;
                if ((_features & ProtocolFeaturesBit) == 0)
                {
                    v.Enabled = true; // without protocol features a ring starts enabled
                }

                TryStart(index);
                return Ack(header, true);
            }

            case VhostUserRequest.SetVringCall:
            {
                if (VhostUserMessage.ReadVringFd(payload, fdCount, _vrings.Length, out int index, out bool noFd) != VhostUserError.None)
                {
                    return Ack(header, false);
                }

                var v = _vrings[index];
                int old = v.Call;
                int fresh = noFd ? -1 : TakeFd(0);
                if (v.Running is { } ring)
                {
                    v.Reactor!.Invoke(() => ring.CallFd = fresh);
                }

                v.Call = fresh;
                if (old >= 0)
                {
                    LibC.close(old);
                }

                return Ack(header, true);
            }

            case VhostUserRequest.SetVringErr:
            {
                if (VhostUserMessage.ReadVringFd(payload, fdCount, _vrings.Length, out int index, out bool noFd) != VhostUserError.None)
                {
                    return Ack(header, false);
                }

                var v = _vrings[index];
                if (v.Err >= 0)
                {
                    LibC.close(v.Err);
                }

                v.Err = noFd ? -1 : TakeFd(0);
                return Ack(header, true);
            }

            case VhostUserRequest.SetVringEnable:
            {
                bool ok = VhostUserMessage.ReadVringState(payload, _vrings.Length, out int index, out uint num) == VhostUserError.None && num <= 1;
                if (ok)
                {
                    _vrings[index].Enabled = num == 1;
                    if (num == 0)
                    {
                        Stop(index);
                    }
                    else
                    {
                        TryStart(index);
                    }
                }

                return Ack(header, ok);
            }

            case VhostUserRequest.GetConfig:
            {
                if (VhostUserMessage.ReadConfig(payload, VhostUserMessage.MaxConfig, out uint offset, out uint size, out _) != VhostUserError.None)
                {
                    _logger.LogWarning("vhost-user session {Id}: malformed GET_CONFIG; closing.", Id);
                    return false;
                }

                Span<byte> reply = stackalloc byte[12 + (int)size];
                payload[..12].CopyTo(reply);
                _config.Read((int)offset, reply[12..]);
                return _channel.Reply(header.Request, reply);
            }

            case VhostUserRequest.SetConfig:
            {
                bool ok = VhostUserMessage.ReadConfig(payload, VirtioBlkConfig.Size, out uint offset, out _, out var data) == VhostUserError.None
                    && _config.Write((int)offset, data);
                return Ack(header, ok);
            }

            case VhostUserRequest.GetInflightFd:
                return GetInflightFd(payload);
            case VhostUserRequest.SetInflightFd:
                return Ack(header, SetInflightFd(payload, fdCount));
            default:
                _logger.LogDebug("vhost-user session {Id}: request {Request} is not supported.", Id, header.Request);
                return Ack(header, false);
        }
    }

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
            int fd = _fds[i];

            ulong end = r.MmapOffset + r.Size;
            if (!TryMapFile(fd, end, $"memory region {i}", out nint p))
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
            _logger.LogWarning("vhost-user session {Id}: memory table refused: {Reason}", Id, e.Message);
            Unmap(mapped);
            return false;
        }

        // Rings point into the old mappings: stop them, swap, and start them again on the new table.
        var wasRunning = new List<int>();
        for (int i = 0; i < _vrings.Length; i++)
        {
            if (_vrings[i].Running != null)
            {
                Stop(i);
                wasRunning.Add(i);
            }
        }

        UnmapMemory();
        _memory = memory;
        _mappings.AddRange(mapped);
        foreach (int i in wasRunning)
        {
            TryStart(i);
        }

        return true;
    }

    // The in-flight area is written by the reactors while rings run: it may be replaced only while none does
    // (QEMU sends GET/SET_INFLIGHT_FD before it starts the rings). A front-end that asks at another moment is
    // refused and the area in use stays mapped.
    private bool AnyRingRunning()
    {
        foreach (var v in _vrings)
        {
            if (v.Running != null)
            {
                return true;
            }
        }

        return false;
    }

    private bool GetInflightFd(ReadOnlySpan<byte> payload)
    {
        if (payload.Length is not (20 or 24))
        {
            _logger.LogWarning("vhost-user session {Id}: malformed GET_INFLIGHT_FD; closing.", Id);
            return false;
        }

        if (AnyRingRunning())
        {
            _logger.LogWarning("vhost-user session {Id}: GET_INFLIGHT_FD while rings run; refused (answered with no area).", Id);
            Span<byte> none = stackalloc byte[24];
            none.Clear();
            return _channel.Reply(VhostUserRequest.GetInflightFd, none[..payload.Length]);
        }

        int queues = BinaryPrimitives.ReadUInt16LittleEndian(payload[16..]);
        int queueSize = BinaryPrimitives.ReadUInt16LittleEndian(payload[18..]);
        Span<byte> reply = stackalloc byte[24];
        reply.Clear();
        if (queues < 1 || queues > _vrings.Length || queueSize < 1 || queueSize > SplitVirtqueue.MaxSize || !int.IsPow2(queueSize))
        {
            // mmap_size 0 tells the front-end there is no in-flight area.
            return _channel.Reply(VhostUserRequest.GetInflightFd, reply);
        }

        long size = queues * InflightRegion.QueueRegionSize(queueSize);
        int fd;
        fixed (byte* name = "hci-inflight\0"u8)
        {
            fd = LibC.memfd_create(name, LibC.MFD_CLOEXEC | 0x2u /* MFD_ALLOW_SEALING */);
        }

        // Sealed at its size: the front-end hands this file back with SET_INFLIGHT_FD after a restart, and the
        // back-end maps only memory that cannot shrink under it.
        if (fd < 0 || LibC.ftruncate(fd, size) != 0 || LibC.fcntl(fd, LibC.F_ADD_SEALS, LibC.F_SEAL_SHRINK | LibC.F_SEAL_GROW) != 0)
        {
            _logger.LogWarning("vhost-user session {Id}: could not make the in-flight area: {Error}.", Id, Errno.Describe(LibC.errno));
            if (fd >= 0)
            {
                LibC.close(fd);
            }

            return _channel.Reply(VhostUserRequest.GetInflightFd, reply);
        }

        void* p = LibC.mmap(null, (size_t)(ulong)size, LibC.PROT_READ | LibC.PROT_WRITE, LibC.MAP_SHARED, fd, 0);
        if (p == (void*)-1)
        {
            LibC.close(fd);
            return _channel.Reply(VhostUserRequest.GetInflightFd, reply);
        }

        UnmapInflight();
        (_inflight, _inflightLength, _inflightQueues, _inflightQueueSize) = ((nint)p, (nuint)size, queues, queueSize);
        BinaryPrimitives.WriteUInt64LittleEndian(reply, (ulong)size);
        BinaryPrimitives.WriteUInt16LittleEndian(reply[16..], (ushort)queues);
        BinaryPrimitives.WriteUInt16LittleEndian(reply[18..], (ushort)queueSize);
        bool sent = _channel.Send(VhostUserRequest.GetInflightFd, 0x5, reply[..payload.Length], fd);
        LibC.close(fd);
        return sent;
    }

    private bool SetInflightFd(ReadOnlySpan<byte> payload, int fdCount)
    {
        if (payload.Length is not (20 or 24) || fdCount != 1)
        {
            return false;
        }

        if (AnyRingRunning())
        {
            _logger.LogWarning("vhost-user session {Id}: SET_INFLIGHT_FD while rings run; refused.", Id);
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

        if (!TryMapFile(_fds[0], offset + size, "the in-flight area", out nint p))
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

    // Maps [0, end) of a file the front-end sent, only if the file really has those bytes: touching a page past
    // its end would kill this process (SIGBUS). The file is also sealed against shrinking where it allows that.
    private bool TryMapFile(int fd, ulong end, string what, out nint address)
    {
        address = 0;
        long fileSize = LibC.lseek(fd, 0, LibC.SEEK_END);
        if (fileSize < 0 || (ulong)fileSize < end || end > (ulong)nint.MaxValue)
        {
            _logger.LogWarning("vhost-user session {Id}: {What} ends at {End} but its file has {Size} bytes; refused.", Id, what, end, fileSize);
            return false;
        }

        // The file must stay at least this long while it is mapped: sealed against shrinking (QEMU's memfd
        // backend seals its own; ours is added where the memfd allows it), or explicitly trusted.
        LibC.fcntl(fd, LibC.F_ADD_SEALS, LibC.F_SEAL_SHRINK);
        int seals = LibC.fcntl(fd, LibC.F_GET_SEALS);
        if ((seals < 0 || (seals & LibC.F_SEAL_SHRINK) == 0) && !_server.Options.AllowUnsealedMemory)
        {
            _logger.LogWarning("vhost-user session {Id}: {What} is in a file that cannot be sealed against shrinking (a front-end could truncate it and kill this process); refused. Share memory through a sealed memfd, or set AllowUnsealedMemory for trusted front-ends.", Id, what);
            return false;
        }

        void* p = LibC.mmap(null, (size_t)end, LibC.PROT_READ | LibC.PROT_WRITE, LibC.MAP_SHARED | LibC.MAP_NORESERVE, fd, 0);
        if (p == (void*)-1)
        {
            _logger.LogWarning("vhost-user session {Id}: mapping {What} failed: {Error}.", Id, what, Errno.Describe(LibC.errno));
            return false;
        }

        address = (nint)p;
        return true;
    }

    private void TryStart(int index)
    {
        var v = _vrings[index];
        if (v.Running != null || _memory == null || v.Size == 0 || !v.AddrSet || !v.KickSet || !v.Enabled || Volatile.Read(ref _disposed) != 0)
        {
            return;
        }

        var (descSize, availSize, usedSize) = SplitVirtqueue.RingSizes(v.Size);
        if (!_memory.TryTranslateUser(v.Descriptors, descSize, out nint desc)
            || !_memory.TryTranslateUser(v.Avail, availSize, out nint avail)
            || !_memory.TryTranslateUser(v.Used, usedSize, out nint used))
        {
            _logger.LogWarning("vhost-user session {Id}: queue {Index}'s rings are not inside guest memory; it stays stopped.", Id, index);
            return;
        }

        ushort lastAvail = v.Base;
        InflightRegion? inflight = null;
        ushort[]? resubmit = null;
        if (_inflight != 0 && index < _inflightQueues && _inflightQueueSize == v.Size)
        {
            inflight = new InflightRegion(_inflight + _inflightOffset + (nint)(index * InflightRegion.QueueRegionSize(v.Size)), v.Size);
            ushort usedIdx = Volatile.Read(ref *(ushort*)(used + 2));
            var heads = new ushort[v.Size];
            int n = inflight.Recover(usedIdx, heads);
            if (n > 0)
            {
                // Everything before these was answered: the ring was read up to the used index plus what is in flight.
                lastAvail = (ushort)(usedIdx + n);
                resubmit = heads[..n];
                _logger.LogInformation("vhost-user session {Id}: queue {Index} resumes {Count} request(s) a previous back-end left in flight.", Id, index, n);
            }
        }

        bool eventIdx = (_features & (1UL << VirtioBlkConfig.FeatureEventIndex)) != 0;
        var vq = new SplitVirtqueue(_memory, v.Size, desc, avail, used, lastAvail, eventIdx);
        var ring = new ReactorRing($"session {Id} queue {index}", vq, v.Kick, v.Call, _server.Options.Serial, _server.Options.Tenant, inflight, resubmit)
        {
            ReadOnly = _config.ReadOnly,
            WriteThrough = () => _config.WriteThrough,
        };
        VirtqueueReactor reactor;
        try
        {
            reactor = _server.PickReactor();
            reactor.Add(ring);
        }
        catch (InvalidOperationException e)
        {
            _logger.LogError("vhost-user session {Id}: queue {Index} cannot start: {Reason}", Id, index, e.Message);
            return;
        }

        _server.Track(ring);
        v.Running = ring;
        v.Reactor = reactor;
    }

    private void Stop(int index)
    {
        var v = _vrings[index];
        if (v.Running is not { } ring)
        {
            return;
        }

        v.Base = v.Reactor!.Remove(ring);
        _server.Retire(ring);
        v.Running = null;
        v.Reactor = null;
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

    private sealed class Vring
    {
        public int Size;
        public ulong Descriptors;
        public ulong Used;
        public ulong Avail;
        public bool AddrSet;
        public ushort Base;
        public int Kick = -1;
        public bool KickSet;
        public int Call = -1;
        public int Err = -1;
        public bool Enabled;
        public ReactorRing? Running;
        public VirtqueueReactor? Reactor;

        public void CloseKick()
        {
            if (Kick >= 0)
            {
                LibC.close(Kick);
            }

            Kick = -1;
            KickSet = false;
        }

        public void CloseFds()
        {
            CloseKick();
            foreach (int fd in (ReadOnlySpan<int>)[Call, Err])
            {
                if (fd >= 0)
                {
                    LibC.close(fd);
                }
            }

            Call = Err = -1;
        }
    }
}
