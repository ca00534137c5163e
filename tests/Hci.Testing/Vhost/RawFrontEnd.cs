using System.Buffers.Binary;
using System.Diagnostics;
using Hci.Transport.Vhost;
using Hci.Transport.Virtio;
using Tmds.Linux;
using Xunit;

namespace Hci.Testing;

/// <summary>
/// A vhost-user front-end written message by message, for tests that need a front-end to do what QEMU would not
/// (send a message at the wrong moment, share memory that cannot be sealed). Its guest memory is a memfd laid out
/// as <see cref="GuestRing"/> lays a ring; guest physical addresses start at <see cref="GuestRing.Base"/>.
/// </summary>
internal sealed unsafe class RawFrontEnd : IDisposable
{
    public const int MemoryLength = 4 << 20;
    public const ulong DefaultFeatures = (1UL << VirtioBlkConfig.FeatureVersion1) | (1UL << VirtioBlkConfig.FeatureFlush)
        | (1UL << VirtioBlkConfig.FeatureConfigWce) | (1UL << VirtioBlkConfig.FeatureDiscard) | (1UL << VirtioBlkConfig.FeatureWriteZeroes)
        | VhostUserMessage.ProtocolFeaturesBit;

    private readonly VhostUserChannel _channel;
    private readonly int _memFd;
    private int _kick = -1;
    private int _call = -1;

    public RawFrontEnd(string socket, bool sealable = true)
    {
        int fd = LibC.socket(LibC.AF_UNIX, LibC.SOCK_STREAM | LibC.SOCK_CLOEXEC, 0);
        var address = UnixSocketAddress.Create(socket);
        if (LibC.connect(fd, (sockaddr*)&address, sizeof(sockaddr_un)) != 0)
        {
            LibC.close(fd);
            throw new IOException($"connect to {socket} failed: errno {LibC.errno}");
        }

        long* timeout = stackalloc long[2] { 10, 0 }; // a back-end that stops answering fails the test, not hangs it
        LibC.setsockopt(fd, LibC.SOL_SOCKET, LibC.SO_RCVTIMEO, timeout, 16);
        _channel = new VhostUserChannel(fd);
        fixed (byte* name = "raw-front-end\0"u8)
        {
            _memFd = LibC.memfd_create(name, LibC.MFD_CLOEXEC | (sealable ? 0x2u /* MFD_ALLOW_SEALING */ : 0u));
        }

        LibC.ftruncate(_memFd, MemoryLength);
        if (sealable)
        {
            LibC.fcntl(_memFd, LibC.F_ADD_SEALS, LibC.F_SEAL_SHRINK | LibC.F_SEAL_GROW);
        }

        Host = (byte*)LibC.mmap(null, MemoryLength, LibC.PROT_READ | LibC.PROT_WRITE, LibC.MAP_SHARED, _memFd, 0);
        Ring = new GuestRing(Host, MemoryLength, size: 64);
    }

    public byte* Host { get; }

    /// <summary>Guest memory at a guest-physical offset from <see cref="GuestRing.Base"/>.</summary>
    public Span<byte> Bytes(ulong offset, int length) => new(Host + offset, length);

    /// <summary>The status byte of a chain laid at <paramref name="offset"/>.</summary>
    public byte this[ulong offset] => Host[offset];

    /// <summary>The ring of queue 0, in this front-end's memory.</summary>
    public GuestRing Ring { get; }

    /// <summary>Sends a message asking for a REPLY_ACK (or its reply) and returns the acknowledgement: true for success.</summary>
    public bool Ask(VhostUserRequest request, ReadOnlySpan<byte> payload, ReadOnlySpan<int> fds = default)
    {
        if (!_channel.Send(request, 0x1 | 0x8, payload, fds))
        {
            throw new IOException($"sending {request} failed");
        }

        Span<byte> reply = stackalloc byte[64];
        Span<int> replyFds = stackalloc int[VhostUserChannel.MaxFds];
        var error = _channel.Receive(reply, replyFds, reply: true, out var header, out int fdCount);
        Assert.Equal(VhostUserError.None, error);
        Assert.Equal(request, header.Request);
        Assert.Equal(0, fdCount);
        return BinaryPrimitives.ReadUInt64LittleEndian(reply) == 0;
    }

    /// <summary>Sends a request that has a reply of its own (GET_*) and returns the payload, and a descriptor if one came.</summary>
    public byte[] Get(VhostUserRequest request, ReadOnlySpan<byte> payload, out int fd)
    {
        if (!_channel.Send(request, 0x1, payload, default(ReadOnlySpan<int>)))
        {
            throw new IOException($"sending {request} failed");
        }

        var reply = new byte[VhostUserHeader.MaxPayload];
        Span<int> fds = stackalloc int[VhostUserChannel.MaxFds];
        var error = _channel.Receive(reply, fds, reply: true, out var header, out int fdCount);
        Assert.Equal(VhostUserError.None, error);
        Assert.Equal(request, header.Request);
        fd = fdCount > 0 ? fds[0] : -1;
        return reply[..(int)header.Size];
    }

    /// <summary>Features, protocol features, owner and the memory table: the set-up before any ring.</summary>
    /// <returns>Whether the memory table was accepted.</returns>
    public bool SetUp(ulong features = DefaultFeatures)
    {
        Span<byte> p = stackalloc byte[40];
        BinaryPrimitives.WriteUInt64LittleEndian(p, (ulong)VhostUserBlkDevice.OfferedProtocol);
        _channel.Send(VhostUserRequest.SetProtocolFeatures, 0x1, p[..8], default(ReadOnlySpan<int>));
        BinaryPrimitives.WriteUInt64LittleEndian(p, features);
        Assert.True(Ask(VhostUserRequest.SetFeatures, p[..8]));
        Assert.True(Ask(VhostUserRequest.SetOwner, default));
        p.Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(p, 1);
        Span<byte> table = stackalloc byte[40];
        table.Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(table, 1);
        BinaryPrimitives.WriteUInt64LittleEndian(table[8..], GuestRing.Base);
        BinaryPrimitives.WriteUInt64LittleEndian(table[16..], MemoryLength);
        BinaryPrimitives.WriteUInt64LittleEndian(table[24..], (ulong)Host);
        return Ask(VhostUserRequest.SetMemTable, table, [_memFd]);
    }

    /// <summary>Queue 0: size, addresses, base, kick and call eventfds, enabled; the back-end starts it.</summary>
    public void StartRing()
    {
        Span<byte> p = stackalloc byte[40];
        p.Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(p[4..], (uint)Ring.Size);
        Assert.True(Ask(VhostUserRequest.SetVringNum, p[..8]));
        p.Clear();
        BinaryPrimitives.WriteUInt64LittleEndian(p[8..], (ulong)(Host + GuestRing.DescOffset));
        BinaryPrimitives.WriteUInt64LittleEndian(p[16..], (ulong)(Host + GuestRing.UsedOffset));
        BinaryPrimitives.WriteUInt64LittleEndian(p[24..], (ulong)(Host + GuestRing.AvailOffset));
        Assert.True(Ask(VhostUserRequest.SetVringAddr, p));
        p.Clear();
        Assert.True(Ask(VhostUserRequest.SetVringBase, p[..8]));
        _kick = LibC.eventfd(0, LibC.EFD_CLOEXEC | LibC.EFD_NONBLOCK);
        _call = LibC.eventfd(0, LibC.EFD_CLOEXEC | LibC.EFD_NONBLOCK);
        p.Clear();
        Assert.True(Ask(VhostUserRequest.SetVringCall, p[..8], [_call]));
        Assert.True(Ask(VhostUserRequest.SetVringKick, p[..8], [_kick]));
        BinaryPrimitives.WriteUInt32LittleEndian(p[4..], 1);
        Assert.True(Ask(VhostUserRequest.SetVringEnable, p[..8]));
    }

    /// <summary>Makes the chain at <paramref name="head"/> available, kicks, and waits for the used index to pass it.</summary>
    public void Submit(ushort head)
    {
        ushort before = Ring.UsedIdx;
        Ring.MakeAvailable(head);
        Kick();
        var deadline = Stopwatch.StartNew();
        while (Volatile.Read(ref *(ushort*)(Host + GuestRing.UsedOffset + 2)) == before)
        {
            Assert.True(deadline.Elapsed < TimeSpan.FromSeconds(10), $"request at head {head} was not answered within 10 s");
            Thread.Yield();
        }
    }

    /// <summary>Writes queue 0's kick eventfd.</summary>
    public void Kick()
    {
        ulong one = 1;
        LibC.write(_kick, &one, sizeof(ulong));
    }

    public void Dispose()
    {
        Ring.Dispose();
        _channel.Dispose();
        LibC.munmap(Host, MemoryLength);
        LibC.close(_memFd);
        if (_kick >= 0)
        {
            LibC.close(_kick);
        }

        if (_call >= 0)
        {
            LibC.close(_call);
        }
    }
}
