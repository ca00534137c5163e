using System.Buffers.Binary;
using System.Diagnostics;
using Hci.Core.Devices;
using Hci.Transport.Vhost;
using Hci.Transport.Virtio;
using Tmds.Linux;

namespace Hci.Transport.Tests.Fuzz;

/// <summary>
/// Structured fuzzing of vhost-user message sequences against <see cref="VhostUserBlkServer"/> over its socket,
/// from a front-end that sets up a real ring (with an in-flight area) in shared memory and keeps doing I/O on it.
/// <para>Draws: control messages at the wrong moment (while the ring runs, before the memory table, after
/// GET_VRING_BASE stopped it, twice in a row): SET_VRING_NUM/ADDR/BASE, GET_VRING_BASE, SET_VRING_KICK/CALL/ERR,
/// SET_VRING_ENABLE 0/1, SET_MEM_TABLE again, SET_FEATURES/SET_PROTOCOL_FEATURES again, RESET_OWNER,
/// GET/SET_CONFIG with offsets and sizes at 0, 1, the config size ± 1 and 256 ± 1, GET_INFLIGHT_FD and
/// SET_INFLIGHT_FD with queue counts and sizes at 0, 1, 2^15, 2^16 - 1 and areas of 0, one page or the exact size
/// ± 1, unknown requests; ring sizes at 0, 1, 2^15, 2^15 + 1 and 2^16 - 1; payload sizes at 0, 7, 8, 9, 12, 20,
/// 24, 40 and the maximum. After each message the front-end states its set-up again (as a front-end recovering
/// would) and does one read through the ring.</para>
/// <para>Checks: the back-end never crashes; every message that asks for a reply gets one within 5 s (the control
/// plane never hangs); after the set-up is stated again, a read is answered on the used ring with OK within
/// 5 s (the reactor is alive and the ring resumes where it was); and at the end a fresh client writes and reads
/// back correctly.</para>
/// </summary>
public sealed unsafe class VhostSequenceFuzzTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private const int MemorySize = 1 << 20;
    private const int QueueSize = 64;

    /// <summary>About 15 s of sequences with nothing left out: on 8d81cfb it found item 4 (GET/SET_INFLIGHT_FD while the ring runs).</summary>
    [Fact]
    public void OutOfOrderControlMessagesIncludingInflightWhileRunningNeitherCrashNorHang() => Fuzz(seconds: 15, avoidKnown: false);

    /// <summary>Issue 9 item 4: GET_INFLIGHT_FD (then SET_INFLIGHT_FD) while the ring runs, then more reads.</summary>
    [Theory]
    [InlineData((uint)VhostUserRequest.GetInflightFd)]
    [InlineData((uint)VhostUserRequest.SetInflightFd)]
    public void InflightFdMessagesWhileTheRingRunsLeaveTheReactorServing(uint requestCode)
    {
        var request = (VhostUserRequest)requestCode; // the wire enum is internal: xUnit passes its number
        using var rig = new Rig();
        using var fe = rig.Connect();
        fe.SetUp(first: true);
        Assert.True(fe.Barrier(), "the set-up was not answered");
        Assert.True(fe.Read(), "the first read was not answered");
        if (request == VhostUserRequest.GetInflightFd)
        {
            fe.GetInflight(1, QueueSize);
        }
        else
        {
            fe.SetInflight(1, QueueSize, InflightRegion.QueueRegionSize(QueueSize));
        }

        Assert.True(fe.Barrier(), "the control plane stopped answering");
        for (int i = 0; i < 8; i++)
        {
            Assert.True(fe.Read(), $"read {i} after {request} while the ring runs was not answered");
        }
    }

    private void Fuzz(int seconds, bool avoidKnown)
    {
        using var rig = new Rig();
        var watch = Stopwatch.StartNew();
        int messages = 0, reads = 0, sessions = 0;
        for (int seed = 1; watch.Elapsed < TimeSpan.FromSeconds(seconds); seed++)
        {
            var b = new Boundary(seed);
            using var fe = rig.Connect();
            sessions++;
            fe.SetUp(first: true);
            string log = "set-up;";
            for (int step = 0; step < 40 && fe.Open; step++)
            {
                string what = fe.Hostile(b, avoidKnown);
                messages++;
                log += what + ";";
                if (!fe.Open)
                {
                    break; // the back-end closed the session on a malformed message, as it may
                }

                Assert.True(fe.Barrier(), $"seed {seed}: the control plane did not answer within 5 s after: {log}");
                fe.SetUp();
                if (!fe.Open)
                {
                    break;
                }

                Assert.True(fe.Read(), $"seed {seed}: a read after the set-up was stated again was not answered within 5 s; messages: {log}");
                reads++;
            }
        }

        // A fresh, well-behaved client is served.
        using (var client = VhostUserBlkClient.Connect(new VhostUserBlkClientOptions { SocketPath = rig.Socket, QueueCount = 1 }))
        {
            var data = new byte[8192];
            new Random(5).NextBytes(data);
            client.WriteAsync(4096, data).AsTask().GetAwaiter().GetResult();
            var back = new byte[8192];
            client.ReadAsync(4096, back).AsTask().GetAwaiter().GetResult();
            Assert.Equal(data, back);
        }

        output.WriteLine($"{sessions} sessions, {messages} out-of-order messages, {reads} reads answered in {watch.Elapsed.TotalSeconds:F1} s");
        Assert.True(reads > 50, $"only {reads} reads were answered");
    }

    private sealed class Rig : IDisposable
    {
        private readonly string _dir;
        private readonly MemoryBlockDevice _backing = new(8 << 20);
        private readonly VhostUserBlkServer _server;

        public Rig()
        {
            _dir = Directory.CreateTempSubdirectory("hci-vhost-fuzz-").FullName;
            Socket = Path.Combine(_dir, "s.sock");
            _server = new VhostUserBlkServer(_backing, new VhostUserBlkServerOptions { SocketPath = Socket, MaxQueues = 1, ReactorThreads = 1, MaxConnections = 4 });
            _server.Start();
        }

        public string Socket { get; }

        public FrontEnd Connect() => new(Socket);

        public void Dispose()
        {
            _server.Dispose();
            _backing.Dispose();
            Directory.Delete(_dir, recursive: true);
        }
    }

    /// <summary>A front-end with one ring in a memfd it shares: descriptors at 0, avail at 0x1000, used at 0x2000.</summary>
    private sealed class FrontEnd : IDisposable
    {
        private const ulong Avail = 0x1000, Used = 0x2000, Header = 0x8000, Status = 0x9000, Data = 0x10000;
        private readonly int _fd;
        private readonly VhostUserChannel _channel;
        private readonly int _memFd;
        private readonly byte* _memory;
        private readonly int _kick;
        private readonly int _call;
        private readonly byte[] _payload = new byte[VhostUserHeader.MaxPayload];
        private ushort _availIdx;

        public FrontEnd(string socket)
        {
            _fd = LibC.socket(LibC.AF_UNIX, LibC.SOCK_STREAM | LibC.SOCK_CLOEXEC, 0);
            var address = UnixSocketAddress.Create(socket);
            Assert.Equal(0, LibC.connect(_fd, (sockaddr*)&address, sizeof(sockaddr_un)));
            long* timeout = stackalloc long[2] { 5, 0 };
            LibC.setsockopt(_fd, LibC.SOL_SOCKET, LibC.SO_SNDTIMEO, timeout, 16);
            LibC.setsockopt(_fd, LibC.SOL_SOCKET, LibC.SO_RCVTIMEO, timeout, 16);
            _channel = new VhostUserChannel(_fd);
            _memFd = MemFd(MemorySize);
            _memory = (byte*)LibC.mmap(null, MemorySize, LibC.PROT_READ | LibC.PROT_WRITE, LibC.MAP_SHARED, _memFd, 0);
            _kick = LibC.eventfd(0, LibC.EFD_CLOEXEC | LibC.EFD_NONBLOCK);
            _call = LibC.eventfd(0, LibC.EFD_CLOEXEC | LibC.EFD_NONBLOCK);
        }

        public bool Open { get; private set; } = true;

        private ulong User => (ulong)_memory;

        public void Dispose()
        {
            _channel.Dispose();
            LibC.munmap(_memory, MemorySize);
            LibC.close(_memFd);
            LibC.close(_kick);
            LibC.close(_call);
        }

        /// <summary>States the whole set-up: features, memory, the ring (refused parts while it runs), kick, call, enable.</summary>
        /// <param name="first">The first time, ask for an in-flight area before the ring starts, as QEMU does.</param>
        public void SetUp(bool first = false)
        {
            Send(VhostUserRequest.SetFeatures, U64((1UL << 32) | (1UL << 30)));
            Send(VhostUserRequest.SetProtocolFeatures, U64((ulong)VhostUserBlkDevice.OfferedProtocol));
            if (first)
            {
                GetInflight(1, QueueSize);
            }

            Span<byte> table = stackalloc byte[40];
            BinaryPrimitives.WriteUInt32LittleEndian(table, 1);
            BinaryPrimitives.WriteUInt64LittleEndian(table[8..], 0);
            BinaryPrimitives.WriteUInt64LittleEndian(table[16..], MemorySize);
            BinaryPrimitives.WriteUInt64LittleEndian(table[24..], User);
            BinaryPrimitives.WriteUInt64LittleEndian(table[32..], 0);
            Send(VhostUserRequest.SetMemTable, table, _memFd);
            Send(VhostUserRequest.SetVringNum, State(0, QueueSize));
            Send(VhostUserRequest.SetVringAddr, Addr(User, User + Used, User + Avail));
            Send(VhostUserRequest.SetVringKick, U64(0), _kick);
            Send(VhostUserRequest.SetVringCall, U64(0), _call);
            Send(VhostUserRequest.SetVringEnable, State(0, 1));
        }

        /// <summary>Reads 4 KiB through the ring; true when answered OK within 5 s.</summary>
        public bool Read()
        {
            ushort head = (ushort)(_availIdx % QueueSize);
            ulong header = Header + ((ulong)head * 16);
            BinaryPrimitives.WriteUInt32LittleEndian(new Span<byte>(_memory + header, 4), VirtioBlk.TypeIn);
            BinaryPrimitives.WriteUInt64LittleEndian(new Span<byte>(_memory + header + 8, 8), (ulong)(head * 8));
            _memory[Status + head] = 0xFF;
            // A one-descriptor-per-request layout would need three; use three consecutive slots of a 3-slot group.
            int d0 = (head * 3) % QueueSize, d1 = (d0 + 1) % QueueSize, d2 = (d0 + 2) % QueueSize;
            // Buffers carry guest physical addresses: the memory table puts guest address 0 at the start of the memfd.
            SetDescriptor(d0, header, 16, 1, (ushort)d1);
            SetDescriptor(d1, Data + ((ulong)head * 4096), 4096, 3, (ushort)d2);
            SetDescriptor(d2, Status + head, 1, 2, 0);
            var avail = (ushort*)(_memory + Avail);
            ushort usedBefore = Volatile.Read(ref *(ushort*)(_memory + Used + 2));
            avail[2 + (_availIdx % QueueSize)] = (ushort)d0;
            _availIdx++;
            Volatile.Write(ref avail[1], _availIdx);
            ulong one = 1;
            LibC.write(_kick, &one, 8);
            var watch = Stopwatch.StartNew();
            while (watch.Elapsed < TimeSpan.FromSeconds(5))
            {
                if (Volatile.Read(ref *(ushort*)(_memory + Used + 2)) != usedBefore && Volatile.Read(ref _memory[Status + head]) != 0xFF)
                {
                    return _memory[Status + head] == VirtioBlk.StatusOk;
                }

                Thread.Yield();
            }

            return false;
        }

        /// <summary>GET_FEATURES as a barrier: every earlier reply is read (and its descriptors closed) first.</summary>
        public bool Barrier()
        {
            if (!Send(VhostUserRequest.GetFeatures, []))
            {
                return !Open;
            }

            var watch = Stopwatch.StartNew();
            Span<int> fds = stackalloc int[VhostUserChannel.MaxFds];
            while (watch.Elapsed < TimeSpan.FromSeconds(5))
            {
                var error = _channel.Receive(_payload, fds, reply: true, out var header, out int count);
                for (int i = 0; i < count; i++)
                {
                    LibC.close(fds[i]);
                }

                if (error == VhostUserError.ShortHeader)
                {
                    // Closed (the session ended: allowed) or timed out (a hang).
                    Open = false;
                    return watch.Elapsed < TimeSpan.FromSeconds(4.5);
                }

                if (error == VhostUserError.None && header.Request == VhostUserRequest.GetFeatures)
                {
                    return true;
                }
            }

            return false;
        }

        public void GetInflight(int queues, int size)
        {
            var p = new byte[24];
            BinaryPrimitives.WriteUInt16LittleEndian(p.AsSpan(16), (ushort)queues);
            BinaryPrimitives.WriteUInt16LittleEndian(p.AsSpan(18), (ushort)size);
            Send(VhostUserRequest.GetInflightFd, p);
        }

        public void SetInflight(int queues, int size, long bytes)
        {
            int fd = MemFd((int)Math.Max(bytes, 0));
            var p = new byte[24];
            BinaryPrimitives.WriteUInt64LittleEndian(p, (ulong)bytes);
            BinaryPrimitives.WriteUInt16LittleEndian(p.AsSpan(16), (ushort)queues);
            BinaryPrimitives.WriteUInt16LittleEndian(p.AsSpan(18), (ushort)size);
            Send(VhostUserRequest.SetInflightFd, p, fd);
            LibC.close(fd);
        }

        /// <summary>One message at the wrong moment, with boundary fields; says what it sent.</summary>
        public string Hostile(Boundary b, bool avoidKnown)
        {
            int which = b.Next(16);
            if (avoidKnown && which is 0 or 1)
            {
                // The in-flight area may only change while the ring is stopped: stop it first (GET_VRING_BASE).
                Send(VhostUserRequest.GetVringBase, State(0, 0));
            }

            int queues = (int)b.Edge([0, 1, 2, 0xFFFF]);
            int size = (int)b.Edge([0, 1, QueueSize, 1 << 15, (1 << 15) + 1, 0xFFFF]);
            switch (which)
            {
                case 0:
                    GetInflight(queues & 0xFFFF, size & 0xFFFF);
                    return $"GET_INFLIGHT_FD queues {queues} size {size}";
                case 1:
                    long exact = InflightRegion.QueueRegionSize(QueueSize);
                    long bytes = b.Pick(0L, 4096L, exact - 1, exact, exact + 1);
                    SetInflight(b.OneIn(2) ? 1 : queues & 0xFFFF, b.OneIn(2) ? QueueSize : size & 0xFFFF, bytes);
                    return $"SET_INFLIGHT_FD bytes {bytes}";
                case 2:
                    Send(VhostUserRequest.SetVringNum, State(b.Pick(0u, 1u, 0xFFFFFFFFu), (uint)b.Edge([0, 1, 2, QueueSize, 1 << 15, (1 << 15) + 1, 0xFFFF, 0x10000])));
                    return "SET_VRING_NUM";
                case 3:
                    Send(VhostUserRequest.SetVringAddr, Addr(User + b.Pick<ulong>(0UL, 1UL, MemorySize - 16UL, MemorySize), User + Used, User + Avail));
                    return "SET_VRING_ADDR";
                case 4:
                    Send(VhostUserRequest.SetVringBase, State(0, b.Pick(0u, (uint)_availIdx, 0x10000u, 0xFFFFFFFFu)));
                    return "SET_VRING_BASE";
                case 5:
                    Send(VhostUserRequest.GetVringBase, State(b.Pick(0u, 1u), 0));
                    return "GET_VRING_BASE";
                case 6:
                    Send(VhostUserRequest.SetVringEnable, State(0, b.Pick(0u, 1u, 2u)));
                    return "SET_VRING_ENABLE";
                case 7:
                    Send(VhostUserRequest.ResetOwner, []);
                    return "RESET_OWNER";
                case 8:
                {
                    uint offset = (uint)b.Edge([0, 1, 59, 60, 61, 255, 256, 257]);
                    uint length = (uint)b.Edge([0, 1, 8, 59, 60, 61, 255, 256, 257]);
                    var p = new byte[12 + (int)Math.Min(length, 300)];
                    BinaryPrimitives.WriteUInt32LittleEndian(p, offset);
                    BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(4), length);
                    var request = b.OneIn(2) ? VhostUserRequest.GetConfig : VhostUserRequest.SetConfig;
                    Send(request, p.AsSpan(0, b.OneIn(4) ? 12 : p.Length));
                    return $"{request} offset {offset} size {length}";
                }

                case 9:
                    Send(VhostUserRequest.SetVringKick, U64(b.Pick(0UL, 1UL << 8)), b.OneIn(2) ? _kick : -1);
                    return "SET_VRING_KICK";
                case 10:
                    Send(VhostUserRequest.SetVringCall, U64(b.Pick(0UL, 1UL << 8)), b.OneIn(2) ? _call : -1);
                    return "SET_VRING_CALL";
                case 11:
                {
                    // The memory table again (the ring must be stopped, swapped and restarted), sometimes shorter
                    // than the rings need.
                    Span<byte> table = stackalloc byte[40];
                    BinaryPrimitives.WriteUInt32LittleEndian(table, 1);
                    BinaryPrimitives.WriteUInt64LittleEndian(table[16..], b.Pick<ulong>(MemorySize, 4096, 0x2000, MemorySize + 1UL));
                    BinaryPrimitives.WriteUInt64LittleEndian(table[24..], User);
                    Send(VhostUserRequest.SetMemTable, table, _memFd);
                    return "SET_MEM_TABLE";
                }

                case 12:
                    Send(VhostUserRequest.SetFeatures, U64(b.Pick(0UL, 1UL << 32, (1UL << 32) | (1UL << 30) | (1UL << 29), ulong.MaxValue)));
                    return "SET_FEATURES";
                case 13:
                {
                    // A known request with a payload of an edge size.
                    var request = b.Pick(VhostUserRequest.SetVringNum, VhostUserRequest.SetVringAddr, VhostUserRequest.SetVringBase, VhostUserRequest.GetVringBase, VhostUserRequest.SetMemTable, VhostUserRequest.GetConfig);
                    int length = b.Pick(0, 7, 8, 9, 12, 20, 24, 40, VhostUserHeader.MaxPayload);
                    Send(request, new byte[length]);
                    return $"{request} with {length} bytes";
                }

                case 14:
                    Send((VhostUserRequest)b.Pick(6u, 7u, 19u, 33u, 36u, 37u, 38u, 99u, 0xFFFFFFFFu), new byte[b.Pick(0, 8, 40)]);
                    return "unknown or unsupported request";
                default:
                    Send(VhostUserRequest.SetProtocolFeatures, U64(b.Pick(0UL, (ulong)VhostUserBlkDevice.OfferedProtocol, ulong.MaxValue)));
                    return "SET_PROTOCOL_FEATURES";
            }
        }

        private void SetDescriptor(int index, ulong address, uint length, ushort flags, ushort next)
        {
            byte* d = _memory + (index * 16);
            *(ulong*)d = address;
            *(uint*)(d + 8) = length;
            *(ushort*)(d + 12) = flags;
            *(ushort*)(d + 14) = next;
        }

        private bool Send(VhostUserRequest request, ReadOnlySpan<byte> payload, int fd = -1)
        {
            if (!Open)
            {
                return false;
            }

            bool ok = fd >= 0 ? _channel.Send(request, 0x1, payload, fd) : _channel.Send(request, 0x1, payload, ReadOnlySpan<int>.Empty);
            if (!ok)
            {
                Open = false;
            }

            return ok;
        }

        private static byte[] U64(ulong value)
        {
            var p = new byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(p, value);
            return p;
        }

        private static byte[] State(uint index, uint num)
        {
            var p = new byte[8];
            BinaryPrimitives.WriteUInt32LittleEndian(p, index);
            BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(4), num);
            return p;
        }

        private static byte[] Addr(ulong desc, ulong used, ulong avail)
        {
            var p = new byte[40];
            BinaryPrimitives.WriteUInt64LittleEndian(p.AsSpan(8), desc);
            BinaryPrimitives.WriteUInt64LittleEndian(p.AsSpan(16), used);
            BinaryPrimitives.WriteUInt64LittleEndian(p.AsSpan(24), avail);
            return p;
        }

        private static int MemFd(int size)
        {
            int fd;
            fixed (byte* name = "vhost-fuzz\0"u8)
            {
                // Sealable, as QEMU's memfd backend makes guest memory: the back-end refuses memory it cannot seal.
                fd = LibC.memfd_create(name, LibC.MFD_CLOEXEC | 0x2u /* MFD_ALLOW_SEALING */);
            }

            LibC.ftruncate(fd, size);
            return fd;
        }
    }
}
