using System.Buffers.Binary;
using System.Numerics;
using Hci.Core.Native;
using Hci.Transport.Virtio;
using Microsoft.Extensions.Logging;
using Tmds.Linux;

namespace Hci.Transport.Vhost;

/// <summary>
/// One front-end connection: the generic vhost-user back-end protocol on the connection's own control thread, in
/// the manner of libvhost-user's <c>vu_process_message</c>, with the device's part behind
/// <see cref="IVhostUserDevice"/>.
/// </summary>
/// <remarks>
/// <para><b>Theory of operation.</b> The front-end (QEMU, or <see cref="VhostUserBlkClient"/>) drives the session
/// with messages on a Unix socket, each possibly carrying file descriptors. <see cref="Run"/> reads one message at
/// a time (<see cref="VhostUserChannel"/> checks the header and size), wraps every descriptor in a
/// <see cref="FileDescriptorHandle"/> at once, and dispatches to one method per request. Each method checks its
/// payload (<see cref="VhostUserMessage"/>) before it changes any state; a malformed request is refused (answered
/// with REPLY_ACK when the front-end asked for it), and one that leaves the stream unusable ends the session.</para>
/// <para>A ring's state (size, addresses, base, eventfds, enable) is collected in a <see cref="Vring"/>. When the
/// last piece arrives and guest memory is mapped, the ring is translated into memory
/// (<see cref="GuestMemory"/>; a ring outside the guest's regions stays stopped), its in-flight record is
/// recovered, and the device starts serving it (<see cref="IVhostUserDevice.StartRing"/>): from then on it belongs
/// to a data-plane thread, and this thread changes it only through the device (a new call eventfd, a stop). A
/// message that needs a ring still (a new kick, GET_VRING_BASE, a new memory table) stops it first, which waits for
/// its requests to complete, so GET_VRING_BASE reports exactly where the ring was read to.</para>
/// <para>Memory is the front-end's: every region and the in-flight area are mapped only if their files really hold
/// the bytes (and cannot shrink), so a front-end cannot make this process touch a page that is not there. When the
/// connection ends, every ring stops, then every mapping and descriptor is released.</para>
/// </remarks>
internal sealed unsafe partial class VhostUserSession : IDisposable
{
    private readonly IVhostUserDevice _device;
    private readonly VhostUserChannel _channel;
    private readonly ILogger _logger;
    private readonly string _socketPath;
    private readonly bool _allowUnsealedMemory;
    private readonly Action<VhostUserSession> _onClosed;
    private readonly Vring[] _vrings;
    private readonly ulong _offered;
    private readonly VhostUserProtocolFeatures _offeredProtocol;
    private readonly byte[] _payload = new byte[VhostUserHeader.MaxPayload];
    private readonly int[] _fdNumbers = new int[VhostUserChannel.MaxFds];
    private readonly FileDescriptorHandle?[] _fds = new FileDescriptorHandle?[VhostUserChannel.MaxFds];
    private ulong _features;
    private VhostUserProtocolFeatures _protocol;
    private int _disposed;

    /// <summary>Takes a connected socket.</summary>
    /// <param name="fd">The connection; the session owns it.</param>
    /// <param name="id">A number for logs.</param>
    /// <param name="device">The device behind the rings.</param>
    /// <param name="socketPath">The listening socket, for logs.</param>
    /// <param name="allowUnsealedMemory">Map memory files that cannot be sealed against shrinking (trusted front-ends only).</param>
    /// <param name="logger">Where to log.</param>
    /// <param name="onClosed">Told once when the session has torn down.</param>
    public VhostUserSession(int fd, int id, IVhostUserDevice device, string socketPath, bool allowUnsealedMemory, ILogger logger, Action<VhostUserSession> onClosed)
    {
        _channel = new VhostUserChannel(fd);
        Id = id;
        _device = device;
        _socketPath = socketPath;
        _allowUnsealedMemory = allowUnsealedMemory;
        _logger = logger;
        _onClosed = onClosed;
        _offered = device.Features | VhostUserMessage.ProtocolFeaturesBit;
        _offeredProtocol = device.ProtocolFeatures;
        _vrings = new Vring[device.QueueCount];
        for (int i = 0; i < _vrings.Length; i++)
        {
            _vrings[i] = new Vring();
        }
    }

    /// <summary>A number for logs.</summary>
    public int Id { get; }

    /// <summary>Serves messages until the front-end disconnects or breaks the protocol, then tears down.</summary>
    public void Run()
    {
        try
        {
            while (true)
            {
                var error = _channel.Receive(_payload, _fdNumbers, out var header, out int fdCount);
                if (error == VhostUserError.ShortHeader)
                {
                    VhostLog.Disconnected(_logger, Id, _socketPath);
                    return;
                }

                if (error != VhostUserError.None)
                {
                    VhostLog.MalformedMessage(_logger, Id, error, header.Request);
                    return;
                }

                for (int i = 0; i < fdCount; i++)
                {
                    _fds[i] = new FileDescriptorHandle(_fdNumbers[i]);
                }

                bool keep;
                try
                {
                    keep = Dispatch(header, _payload.AsSpan(0, (int)header.Size), fdCount);
                }
                finally
                {
                    // Descriptors a handler did not take are closed here, whatever it did.
                    for (int i = 0; i < fdCount; i++)
                    {
                        _fds[i]?.Dispose();
                        _fds[i] = null;
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
            VhostLog.SessionFailed(_logger, e, Id);
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
        _onClosed(this);
    }

    // One method per request, as vu_process_message: each returns false to end the session.
    private bool Dispatch(in VhostUserHeader header, ReadOnlySpan<byte> payload, int fdCount) => header.Request switch
    {
        VhostUserRequest.GetFeatures => ReplyU64(header.Request, _offered),
        VhostUserRequest.SetFeatures => Ack(header, SetFeatures(payload, fdCount)),
        VhostUserRequest.GetProtocolFeatures => ReplyU64(header.Request, (ulong)_offeredProtocol),
        VhostUserRequest.SetProtocolFeatures => Ack(header, SetProtocolFeatures(payload)),
        VhostUserRequest.GetQueueNum => ReplyU64(header.Request, (ulong)_vrings.Length),
        VhostUserRequest.SetOwner => Ack(header, true),
        VhostUserRequest.ResetOwner => Ack(header, ResetOwner()),
        VhostUserRequest.SetMemTable => Ack(header, SetMemTable(payload, fdCount)),
        VhostUserRequest.SetVringNum => Ack(header, SetVringNum(payload)),
        VhostUserRequest.SetVringAddr => Ack(header, SetVringAddr(payload)),
        VhostUserRequest.SetVringBase => Ack(header, SetVringBase(payload)),
        VhostUserRequest.GetVringBase => GetVringBase(payload),
        VhostUserRequest.SetVringKick => Ack(header, SetVringKick(payload, fdCount)),
        VhostUserRequest.SetVringCall => Ack(header, SetVringCall(payload, fdCount)),
        VhostUserRequest.SetVringErr => Ack(header, SetVringErr(payload, fdCount)),
        VhostUserRequest.SetVringEnable => Ack(header, SetVringEnable(payload)),
        VhostUserRequest.GetConfig => GetConfig(payload),
        VhostUserRequest.SetConfig => Ack(header, SetConfig(payload)),
        VhostUserRequest.GetInflightFd => GetInflightFd(payload),
        VhostUserRequest.SetInflightFd => Ack(header, SetInflightFd(payload, fdCount)),
        _ => Unsupported(header),
    };

    private bool Unsupported(in VhostUserHeader header)
    {
        VhostLog.UnsupportedRequest(_logger, Id, header.Request);
        return Ack(header, false);
    }

    private bool SetFeatures(ReadOnlySpan<byte> payload, int fdCount)
    {
        if (VhostUserMessage.ReadU64(payload, out ulong value) != VhostUserError.None || (value & ~_offered) != 0 || fdCount != 0)
        {
            return false;
        }

        _features = value;
        _device.SetFeatures(value & ~VhostUserMessage.ProtocolFeaturesBit);
        return true;
    }

    private bool SetProtocolFeatures(ReadOnlySpan<byte> payload)
    {
        if (VhostUserMessage.ReadU64(payload, out ulong value) != VhostUserError.None || (value & ~(ulong)_offeredProtocol) != 0)
        {
            return false;
        }

        _protocol = (VhostUserProtocolFeatures)value;
        return true;
    }

    private bool ResetOwner()
    {
        for (int i = 0; i < _vrings.Length; i++)
        {
            Stop(i);
        }

        _features = 0;
        return true;
    }

    private bool SetVringNum(ReadOnlySpan<byte> payload)
    {
        if (VhostUserMessage.ReadVringState(payload, _vrings.Length, out int index, out uint num) != VhostUserError.None
            || num is < 1 or > SplitVirtqueue.MaxSize || !BitOperations.IsPow2(num) || _vrings[index].Started)
        {
            return false;
        }

        _vrings[index].Size = (int)num;
        return true;
    }

    private bool SetVringAddr(ReadOnlySpan<byte> payload)
    {
        if (VhostUserMessage.ReadVringAddr(payload, _vrings.Length, out int index, out ulong desc, out ulong used, out ulong avail) != VhostUserError.None
            || _vrings[index].Started)
        {
            return false;
        }

        var v = _vrings[index];
        (v.Descriptors, v.Used, v.Avail, v.AddrSet) = (desc, used, avail, true);
        TryStart(index);
        return true;
    }

    private bool SetVringBase(ReadOnlySpan<byte> payload)
    {
        if (VhostUserMessage.ReadVringState(payload, _vrings.Length, out int index, out uint num) != VhostUserError.None
            || num > ushort.MaxValue || _vrings[index].Started)
        {
            return false;
        }

        _vrings[index].Base = (ushort)num;
        return true;
    }

    private bool GetVringBase(ReadOnlySpan<byte> payload)
    {
        if (VhostUserMessage.ReadVringState(payload, _vrings.Length, out int index, out _) != VhostUserError.None)
        {
            VhostLog.GetVringBaseNoQueue(_logger, Id);
            return false;
        }

        Stop(index);
        var v = _vrings[index];
        v.CloseKick();
        Span<byte> p = stackalloc byte[8];
        BinaryPrimitives.WriteUInt32LittleEndian(p, (uint)index);
        BinaryPrimitives.WriteUInt32LittleEndian(p[4..], v.Base);
        return _channel.Reply(VhostUserRequest.GetVringBase, p);
    }

    private bool SetVringKick(ReadOnlySpan<byte> payload, int fdCount)
    {
        if (VhostUserMessage.ReadVringFd(payload, fdCount, _vrings.Length, out int index, out bool noFd) != VhostUserError.None)
        {
            return false;
        }

        Stop(index);
        var v = _vrings[index];
        v.CloseKick();
        v.Kick = noFd ? null : TakeFd(0);
        if (v.Kick != null)
        {
            int flags = LibC.fcntl(v.Kick.Fd, LibC.F_GETFL);
            LibC.fcntl(v.Kick.Fd, LibC.F_SETFL, flags | LibC.O_NONBLOCK);
        }

        v.KickSet = true;
        if ((_features & VhostUserMessage.ProtocolFeaturesBit) == 0)
        {
            v.Enabled = true; // without protocol features a ring starts enabled
        }

        TryStart(index);
        return true;
    }

    private bool SetVringCall(ReadOnlySpan<byte> payload, int fdCount)
    {
        if (VhostUserMessage.ReadVringFd(payload, fdCount, _vrings.Length, out int index, out bool noFd) != VhostUserError.None)
        {
            return false;
        }

        var v = _vrings[index];
        var old = v.Call;
        var fresh = noFd ? null : TakeFd(0);
        if (v.Started)
        {
            _device.SetCall(index, fresh);
        }

        v.Call = fresh;
        old?.Dispose();
        return true;
    }

    private bool SetVringErr(ReadOnlySpan<byte> payload, int fdCount)
    {
        if (VhostUserMessage.ReadVringFd(payload, fdCount, _vrings.Length, out int index, out bool noFd) != VhostUserError.None)
        {
            return false;
        }

        var v = _vrings[index];
        v.Err?.Dispose();
        v.Err = noFd ? null : TakeFd(0);
        return true;
    }

    private bool SetVringEnable(ReadOnlySpan<byte> payload)
    {
        if (VhostUserMessage.ReadVringState(payload, _vrings.Length, out int index, out uint num) != VhostUserError.None || num > 1)
        {
            return false;
        }

        _vrings[index].Enabled = num == 1;
        if (num == 0)
        {
            Stop(index);
        }
        else
        {
            TryStart(index);
        }

        return true;
    }

    private bool GetConfig(ReadOnlySpan<byte> payload)
    {
        if (VhostUserMessage.ReadConfig(payload, VhostUserMessage.MaxConfig, out uint offset, out uint size, out _) != VhostUserError.None)
        {
            VhostLog.MalformedGetConfig(_logger, Id);
            return false;
        }

        Span<byte> reply = stackalloc byte[12 + (int)size];
        payload[..12].CopyTo(reply);
        _device.ReadConfig((int)offset, reply[12..]);
        return _channel.Reply(VhostUserRequest.GetConfig, reply);
    }

    private bool SetConfig(ReadOnlySpan<byte> payload)
        => VhostUserMessage.ReadConfig(payload, _device.ConfigSize, out uint offset, out _, out var data) == VhostUserError.None
            && _device.WriteConfig((int)offset, data);

    private bool NeedAck(in VhostUserHeader header) => header.NeedReply && (_protocol & VhostUserProtocolFeatures.ReplyAck) != 0;

    private bool Ack(in VhostUserHeader header, bool ok)
    {
        if (!ok)
        {
            VhostLog.RequestRefused(_logger, Id, header.Request);
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

    private FileDescriptorHandle TakeFd(int i)
    {
        var fd = _fds[i]!;
        _fds[i] = null;
        return fd;
    }

    private bool AnyRingStarted()
    {
        foreach (var v in _vrings)
        {
            if (v.Started)
            {
                return true;
            }
        }

        return false;
    }

    private void TryStart(int index)
    {
        var v = _vrings[index];
        if (v.Started || _memory == null || v.Size == 0 || !v.AddrSet || !v.KickSet || !v.Enabled || Volatile.Read(ref _disposed) != 0)
        {
            return;
        }

        var (descSize, availSize, usedSize) = SplitRing.Sizes(v.Size);
        if (!_memory.TryTranslateUser(v.Descriptors, descSize, out nint desc)
            || !_memory.TryTranslateUser(v.Avail, availSize, out nint avail)
            || !_memory.TryTranslateUser(v.Used, usedSize, out nint used))
        {
            VhostLog.RingsOutsideMemory(_logger, Id, index);
            return;
        }

        ushort lastAvail = v.Base;
        var inflight = RecoverInflight(index, v.Size, (byte*)used, ref lastAvail, out var resubmit);
        bool eventIdx = (_features & (1UL << VirtioBlkConfig.FeatureEventIndex)) != 0;
        var vq = new SplitVirtqueue(_memory, v.Size, desc, avail, used, lastAvail, eventIdx);
        v.Started = _device.StartRing(new VringStart(index, vq, v.Kick, v.Call, inflight, resubmit));
    }

    private void Stop(int index)
    {
        var v = _vrings[index];
        if (!v.Started)
        {
            return;
        }

        v.Base = _device.StopRing(index);
        v.Started = false;
    }

    /// <summary>What the front-end has said about one ring, and whether the device serves it.</summary>
    private sealed class Vring
    {
        public int Size;
        public ulong Descriptors;
        public ulong Used;
        public ulong Avail;
        public bool AddrSet;
        public ushort Base;
        public FileDescriptorHandle? Kick;
        public bool KickSet;
        public FileDescriptorHandle? Call;
        public FileDescriptorHandle? Err;
        public bool Enabled;
        public bool Started;

        public void CloseKick()
        {
            Kick?.Dispose();
            Kick = null;
            KickSet = false;
        }

        public void CloseFds()
        {
            CloseKick();
            Call?.Dispose();
            Err?.Dispose();
            Call = Err = null;
        }
    }
}
