using System.Buffers.Binary;
using System.Collections.Concurrent;
using Hci.Core.Blocks;
using Hci.Core.Devices;
using Hci.Core.Devices.Decorators;
using Hci.Core.Modules;
using Hci.Transport.Vhost;
using Hci.Transport.Virtio;
using Tmds.Linux;

namespace Hci.Transport.Tests;

/// <summary>
/// The back-end against a front-end that does what QEMU would not, message by message (<see cref="RawFrontEnd"/>):
/// writes to a read-only export, in-flight areas swapped under running rings, memory that cannot be sealed, a
/// guest that turns its write cache off, and a ring whose serving fails under it.
/// </summary>
public sealed class VhostHardeningTests
{
    private const ulong DataOffset = 0x20000;

    [Fact]
    public async Task AReadOnlyExportAnswersWritesDiscardsAndWriteZeroesWithAnErrorAndKeepsItsBlocks()
    {
        using var h = new Backend(o => o.ReadOnly = true);
        var pattern = new byte[4096];
        pattern.AsSpan().Fill(0x77);
        await h.Backing.WriteAsync(0, pattern);
        using var fe = new RawFrontEnd(h.Socket);
        Assert.True(fe.SetUp((1UL << VirtioBlkConfig.FeatureVersion1) | (1UL << VirtioBlkConfig.FeatureReadOnly) | VhostUserMessage.ProtocolFeaturesBit));
        fe.StartRing();

        fe.Bytes(DataOffset, 4096).Fill(0x11);
        Assert.Equal(VirtioBlk.StatusIoErr, Do(fe, 0, VirtioBlk.TypeOut, 0, (DataOffset, 4096, false)));
        WriteRange(fe, 0x30000, sector: 0, sectors: 8);
        Assert.Equal(VirtioBlk.StatusIoErr, Do(fe, 4, VirtioBlk.TypeDiscard, 0, (0x30000, 16, false)));
        Assert.Equal(VirtioBlk.StatusIoErr, Do(fe, 8, VirtioBlk.TypeWriteZeroes, 0, (0x30000, 16, false)));

        var back = new byte[4096];
        await h.Backing.ReadAsync(0, back);
        Assert.Equal(pattern, back);
        Assert.Equal(VirtioBlk.StatusOk, Do(fe, 12, VirtioBlk.TypeIn, 0, (0x40000, 4096, true)));
        Assert.True(fe.Bytes(0x40000, 4096).SequenceEqual(pattern));
    }

    [Fact]
    public void InFlightAreaMessagesWhileRingsRunAreRefusedAndTheRingKeepsServing()
    {
        using var h = new Backend();
        using var fe = new RawFrontEnd(h.Socket);
        Assert.True(fe.SetUp());
        Span<byte> ask = stackalloc byte[24];
        ask.Clear();
        BinaryPrimitives.WriteUInt16LittleEndian(ask[16..], 1);
        BinaryPrimitives.WriteUInt16LittleEndian(ask[18..], (ushort)fe.Ring.Size);

        // Before the rings start, as QEMU asks: the back-end makes the area and the ring records into it.
        var first = fe.Get(VhostUserRequest.GetInflightFd, ask, out int area);
        Assert.True(BinaryPrimitives.ReadUInt64LittleEndian(first) > 0);
        Assert.True(area >= 0);
        try
        {
            fe.StartRing();
            fe.Bytes(DataOffset, 4096).Fill(0x21);
            Assert.Equal(VirtioBlk.StatusOk, Do(fe, 0, VirtioBlk.TypeOut, 8, (DataOffset, 4096, false)));

            // While it runs: refused, and the area the ring writes to stays mapped.
            var again = fe.Get(VhostUserRequest.GetInflightFd, ask, out int none);
            Assert.Equal(0UL, BinaryPrimitives.ReadUInt64LittleEndian(again));
            Assert.Equal(-1, none);
            Span<byte> set = stackalloc byte[24];
            first.AsSpan(0, 24).CopyTo(set);
            Assert.False(fe.Ask(VhostUserRequest.SetInflightFd, set, [area]));

            for (ushort i = 1; i < 8; i++)
            {
                Assert.Equal(VirtioBlk.StatusOk, Do(fe, (ushort)(i * 4), VirtioBlk.TypeIn, 8, (0x40000, 4096, true)));
            }

            Assert.True(fe.Bytes(0x40000, 4096).IndexOfAnyExcept((byte)0x21) < 0);
        }
        finally
        {
            LibC.close(area);
        }
    }

    [Fact]
    public void GuestMemoryInAFileThatCannotBeSealedIsRefusedUnlessTheFrontEndIsTrusted()
    {
        using (var h = new Backend())
        {
            using var fe = new RawFrontEnd(h.Socket, sealable: false);
            Assert.False(fe.SetUp());
        }

        using (var h = new Backend(o => o.AllowUnsealedMemory = true))
        {
            using var fe = new RawFrontEnd(h.Socket, sealable: false);
            Assert.True(fe.SetUp());
            fe.StartRing();
            Assert.Equal(VirtioBlk.StatusOk, Do(fe, 0, VirtioBlk.TypeIn, 0, (0x40000, 4096, true)));
        }

        using (var h = new Backend())
        {
            using var fe = new RawFrontEnd(h.Socket, sealable: true);
            Assert.True(fe.SetUp());
        }
    }

    [Fact]
    public void AGuestThatTurnsTheWriteCacheOffGetsEveryWriteMadeDurable()
    {
        using var h = new Backend();
        using var fe = new RawFrontEnd(h.Socket);
        Assert.True(fe.SetUp());
        fe.StartRing();
        Assert.Equal(1, ReadWriteback(fe));
        Assert.Equal(VirtioBlk.StatusOk, Do(fe, 0, VirtioBlk.TypeOut, 0, (DataOffset, 4096, false)));
        Assert.Equal(BlockRequestFlags.None, h.Recorder.LastWriteFlags);

        Span<byte> config = stackalloc byte[13];
        config.Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(config, VirtioBlkConfig.WritebackOffset);
        BinaryPrimitives.WriteUInt32LittleEndian(config[4..], 1);
        Assert.True(fe.Ask(VhostUserRequest.SetConfig, config));
        Assert.Equal(0, ReadWriteback(fe));
        Assert.Equal(VirtioBlk.StatusOk, Do(fe, 4, VirtioBlk.TypeOut, 8, (DataOffset, 4096, false)));
        Assert.Equal(BlockRequestFlags.ForceUnitAccess, h.Recorder.LastWriteFlags);
    }

    [Fact]
    public void AGuestThatDidNotNegotiateFlushSeesAWriteThroughCacheAndGetsDurableWrites()
    {
        using var h = new Backend();
        using var fe = new RawFrontEnd(h.Socket);
        Assert.True(fe.SetUp((1UL << VirtioBlkConfig.FeatureVersion1) | VhostUserMessage.ProtocolFeaturesBit));
        fe.StartRing();
        Assert.Equal(0, ReadWriteback(fe));
        Assert.Equal(VirtioBlk.StatusOk, Do(fe, 0, VirtioBlk.TypeOut, 0, (DataOffset, 4096, false)));
        Assert.Equal(BlockRequestFlags.ForceUnitAccess, h.Recorder.LastWriteFlags);
    }

    /// <summary>
    /// The reactor itself fails fast (an exception escaping it ends the process), so the failure is injected where a
    /// ring's own processing throws outside any one chain (the queue's throttle check): that ring fails, not the
    /// reactor.
    /// </summary>
    [Fact]
    public void ARingWhoseServingFailsStopsWhereItHadReadAndTheReactorServesTheOthers()
    {
        using var h = new Backend();
        using var fe = new RawFrontEnd(h.Socket);
        Assert.True(fe.SetUp());
        fe.StartRing();
        for (ushort i = 0; i < 3; i++)
        {
            Assert.Equal(VirtioBlk.StatusOk, Do(fe, (ushort)(i * 4), VirtioBlk.TypeIn, (ulong)i * 8, (0x40000, 4096, true)));
        }

        // Serving the ring throws while the fourth request waits in it.
        h.Recorder.FailThrottleChecks = true;
        VirtioBoundaryTests.Lay(fe.Ring, 12, VirtioBlk.TypeIn, 24, 0x10000 + 0x300, 0x10000 + 0x380, (0x40000, 4096, true));
        fe.Ring.MakeAvailable(12);
        fe.Kick();
        var deadline = System.Diagnostics.Stopwatch.StartNew();
        while (h.Recorder.ThrottleCheckFailures == 0)
        {
            Assert.True(deadline.Elapsed < TimeSpan.FromSeconds(10), "the reactor never looked at the failing ring");
            Thread.Yield();
        }

        // GET_VRING_BASE answers where the ring was read to (3: the fourth request was never taken), not 0: a
        // front-end restarting the ring from 0 would replay requests already done. It answers at once.
        Span<byte> state = stackalloc byte[8];
        state.Clear();
        var vringBase = fe.Get(VhostUserRequest.GetVringBase, state, out _);
        Assert.Equal(3u, BinaryPrimitives.ReadUInt32LittleEndian(vringBase.AsSpan(4)));

        // The reactor lives on: a new front-end's ring on it is served.
        h.Recorder.FailThrottleChecks = false;
        using var second = new RawFrontEnd(h.Socket);
        Assert.True(second.SetUp());
        second.StartRing();
        Assert.Equal(VirtioBlk.StatusOk, Do(second, 0, VirtioBlk.TypeIn, 0, (0x40000, 4096, true)));
        var secondBase = second.Get(VhostUserRequest.GetVringBase, state, out _);
        Assert.Equal(1u, BinaryPrimitives.ReadUInt32LittleEndian(secondBase.AsSpan(4)));
    }

    private static int ReadWriteback(RawFrontEnd fe)
    {
        Span<byte> ask = stackalloc byte[12 + VirtioBlkConfig.Size];
        ask.Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(ask[4..], VirtioBlkConfig.Size);
        var reply = fe.Get(VhostUserRequest.GetConfig, ask, out _);
        return reply[12 + VirtioBlkConfig.WritebackOffset];
    }

    private static void WriteRange(RawFrontEnd fe, ulong at, ulong sector, uint sectors)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(fe.Bytes(at, 8), sector);
        BinaryPrimitives.WriteUInt32LittleEndian(fe.Bytes(at + 8, 4), sectors);
        BinaryPrimitives.WriteUInt32LittleEndian(fe.Bytes(at + 12, 4), 0);
    }

    /// <summary>One request through the ring: header and status in the ring's data area, per head.</summary>
    private static byte Do(RawFrontEnd fe, ushort head, uint type, ulong sector, params (ulong Offset, uint Length, bool DeviceWrites)[] data)
    {
        ulong header = 0x10000 + ((ulong)head * 0x20);
        ulong status = header + 0x10;
        VirtioBoundaryTests.Lay(fe.Ring, head, type, sector, header, status, data);
        fe.Submit(head);
        return fe[status];
    }

    /// <summary>A back-end on a memory device behind a recording decorator, on one reactor.</summary>
    private sealed class Backend : IDisposable
    {
        private readonly VhostUserBlkServer _server;
        private readonly string _dir;

        public Backend(Action<VhostUserBlkServerOptions>? configure = null)
        {
            _dir = Directory.CreateTempSubdirectory("hci-vhost-hard-").FullName;
            Socket = Path.Combine(_dir, "s.sock");
            Backing = new MemoryBlockDevice(8 << 20);
            Recorder = new RecordingBlockDevice(Backing);
            var options = new VhostUserBlkServerOptions { SocketPath = Socket, MaxQueues = 1, ReactorThreads = 1 };
            configure?.Invoke(options);
            _server = new VhostUserBlkServer(Recorder, options);
            _server.Start();
        }

        public string Socket { get; }

        public MemoryBlockDevice Backing { get; }

        public RecordingBlockDevice Recorder { get; }

        public void Dispose()
        {
            _server.Dispose();
            Recorder.Dispose();
            Directory.Delete(_dir, recursive: true);
        }
    }
}

/// <summary>A decorator that records what reaches the device and can make its queue's throttle checks throw.</summary>
internal sealed class RecordingBlockDevice(BlockDevice inner) : BlockDeviceDecorator(inner, ownsInner: false)
{
    private long _lastWriteFlags;
    private int _throttleCheckFailures;

    public ConcurrentQueue<(BlockOperation Operation, BlockRequestFlags Flags)> Seen { get; } = new();

    public BlockRequestFlags LastWriteFlags => (BlockRequestFlags)Interlocked.Read(ref _lastWriteFlags);

    public volatile bool FailThrottleChecks;

    public int ThrottleCheckFailures => Volatile.Read(ref _throttleCheckFailures);

    protected override BlockQueue CreateQueueCore(int depth) => new Queue(this, depth);

    private sealed class Queue(RecordingBlockDevice device, int depth) : DecoratorQueue(device, device.Inner, depth)
    {
        protected override void SubmitCore(BlockRequest request)
        {
            device.Seen.Enqueue((request.Operation, request.Flags));
            if (request.Operation == BlockOperation.Write)
            {
                Interlocked.Exchange(ref device._lastWriteFlags, (long)request.Flags);
            }

            Forward(request);
        }

        public override bool IsThrottled(int tenant)
        {
            if (device.FailThrottleChecks)
            {
                Interlocked.Increment(ref device._throttleCheckFailures);
                throw new InvalidOperationException("injected: the device's queue failed under the ring");
            }

            return base.IsThrottled(tenant);
        }

        protected override int PollCore(int minCompletions, int timeoutMilliseconds)
        {
            int before = InFlight;
            InnerQueue.Poll(minCompletions, timeoutMilliseconds);
            return before - InFlight;
        }
    }
}
