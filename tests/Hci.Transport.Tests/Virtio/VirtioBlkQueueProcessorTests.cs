using System.Buffers.Binary;
using Hci.Core.Blocks;
using Hci.Core.Devices;
using Hci.Transport.Virtio;

namespace Hci.Transport.Tests;

/// <summary>The virtio-blk device over a real block device, driven through a fake guest's ring in memory.</summary>
public sealed unsafe class VirtioBlkQueueProcessorTests : IDisposable
{
    private const ushort Next = 1, Write = 2;
    private readonly GuestRing _g = new(size: 64);
    private readonly MemoryBlockDevice _device = new(1 << 20, logicalBlockSize: 512);
    private readonly BlockQueue _queue;
    private readonly VirtioBlkQueueProcessor _blk;
    private int _signals;

    public VirtioBlkQueueProcessorTests()
    {
        _queue = _device.CreateQueue(64);
        _blk = new VirtioBlkQueueProcessor(_g.Queue, _queue, "hci-test-serial", tenant: 3, () => _signals++);
    }

    public void Dispose()
    {
        _blk.Dispose();
        _queue.Dispose();
        _device.Dispose();
        _g.Dispose();
    }

    private ulong Gpa(ulong offset) => GuestRing.Base + offset;

    /// <summary>Lays out header (at hdr), data (at data) and status (at st) as descriptors first..first+2.</summary>
    private ushort Request(ushort first, uint type, ulong sector, ulong data, uint length, bool deviceWrites, ulong header, ulong status)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(new Span<byte>(_g.Host + header, 4), type);
        BinaryPrimitives.WriteUInt64LittleEndian(new Span<byte>(_g.Host + header + 8, 8), sector);
        _g.Host[status] = 0xFF;
        if (length == 0)
        {
            _g.SetDescriptor(first, Gpa(header), 16, Next, (ushort)(first + 1));
            _g.SetDescriptor(first + 1, Gpa(status), 1, Write, 0);
        }
        else
        {
            _g.SetDescriptor(first, Gpa(header), 16, Next, (ushort)(first + 1));
            _g.SetDescriptor(first + 1, Gpa(data), length, (ushort)(Next | (deviceWrites ? Write : 0)), (ushort)(first + 2));
            _g.SetDescriptor(first + 2, Gpa(status), 1, Write, 0);
        }

        _g.MakeAvailable(first);
        return first;
    }

    private void Run()
    {
        _blk.Process();
        while (_queue.InFlight > 0)
        {
            _queue.Poll();
        }

        _blk.FlushNotifications();
    }

    [Fact]
    public void AWriteThenAReadMoveTheGuestsBytesStraightThroughTheDevice()
    {
        new Span<byte>(_g.Host + 0x20000, 4096).Fill(0x6B);
        Request(0, VirtioBlk.TypeOut, 16, 0x20000, 4096, false, 0x30000, 0x30100);
        Run();
        Assert.Equal(VirtioBlk.StatusOk, _g.Host[0x30100]);
        Assert.Equal((0u, 1u), _g.UsedEntry(0));

        Request(4, VirtioBlk.TypeIn, 16, 0x40000, 4096, true, 0x30200, 0x30300);
        Run();
        Assert.Equal(VirtioBlk.StatusOk, _g.Host[0x30300]);
        Assert.Equal((4u, 4097u), _g.UsedEntry(1));
        Assert.True(new Span<byte>(_g.Host + 0x40000, 4096).SequenceEqual(new Span<byte>(_g.Host + 0x20000, 4096)));
        Assert.True(_signals > 0);
    }

    [Fact]
    public void GetIdFlushDiscardAndWriteZeroesAreAnswered()
    {
        Request(0, VirtioBlk.TypeGetId, 0, 0x20000, 20, true, 0x30000, 0x30100);
        Run();
        Assert.Equal(VirtioBlk.StatusOk, _g.Host[0x30100]);
        Assert.Equal("hci-test-serial", System.Text.Encoding.ASCII.GetString(_g.Host + 0x20000, 15));

        Request(4, VirtioBlk.TypeFlush, 0, 0, 0, false, 0x30200, 0x30300);
        Run();
        Assert.Equal(VirtioBlk.StatusOk, _g.Host[0x30300]);

        var range = new Span<byte>(_g.Host + 0x21000, 16);
        BinaryPrimitives.WriteUInt64LittleEndian(range, 0);
        BinaryPrimitives.WriteUInt32LittleEndian(range[8..], 8);
        Request(8, VirtioBlk.TypeWriteZeroes, 0, 0x21000, 16, false, 0x30400, 0x30500);
        Run();
        Assert.Equal(VirtioBlk.StatusOk, _g.Host[0x30500]);
        Request(12, VirtioBlk.TypeDiscard, 0, 0x21000, 16, false, 0x30600, 0x30700);
        Run();
        Assert.Equal(VirtioBlk.StatusOk, _g.Host[0x30700]);
    }

    [Fact]
    public void ReadsPastTheEndAndUnknownTypesGetIoErrAndUnsupp()
    {
        Request(0, VirtioBlk.TypeIn, (1 << 20) / 512, 0x40000, 512, true, 0x30000, 0x30100);
        Request(4, 99, 0, 0, 0, false, 0x30200, 0x30300);
        Request(8, VirtioBlk.TypeIn, ulong.MaxValue / 2, 0x40000, 512, true, 0x30400, 0x30500);
        Run();
        Assert.Equal(VirtioBlk.StatusIoErr, _g.Host[0x30100]);
        Assert.Equal(VirtioBlk.StatusUnsupported, _g.Host[0x30300]);
        Assert.Equal(VirtioBlk.StatusIoErr, _g.Host[0x30500]);
        Assert.Equal(3, _g.UsedIdx);
    }

    [Fact]
    public void AThrottledGuestKeepsItsRequestsInItsRingWithKicksOffAndTheyGoAsOneBatchAfterwards()
    {
        bool throttled = true;
        _blk.IsThrottled = () => throttled;
        for (ushort i = 0; i < 8; i++)
        {
            Request((ushort)(i * 4), VirtioBlk.TypeIn, i, 0x40000 + (i * 0x1000UL), 512, true, 0x30000 + (i * 0x100UL), 0x38000 + (i * 0x100UL));
        }

        Assert.Equal(0, _blk.Process());
        Assert.Equal(1, *(ushort*)(_g.Host + GuestRing.UsedOffset)); // VRING_USED_F_NO_NOTIFY
        Assert.Equal(8, _g.Queue.Pending());
        throttled = false;
        Assert.Equal(8, _blk.Process());
        Assert.Equal(0, *(ushort*)(_g.Host + GuestRing.UsedOffset));
        while (_queue.InFlight > 0)
        {
            _queue.Poll();
        }

        Assert.Equal(8, _g.UsedIdx);
    }

    [Fact]
    public void ABatchOfCompletionsRaisesOneInterrupt()
    {
        for (ushort i = 0; i < 8; i++)
        {
            Request((ushort)(i * 4), VirtioBlk.TypeIn, i, 0x40000 + (i * 0x1000UL), 512, true, 0x30000 + (i * 0x100UL), 0x38000 + (i * 0x100UL));
        }

        Run();
        Assert.Equal(8, _g.UsedIdx);
        Assert.Equal(1, _signals);
        Assert.Equal(1, _blk.Interrupts);
    }

    [Fact]
    public void RandomHostileChainsNeverCrashTheDeviceAndAGoodRequestIsServedAfterwards()
    {
        var rng = new Random(99);
        for (int round = 0; round < 100_000; round++)
        {
            for (int i = 0; i < 6; i++)
            {
                ulong address = rng.Next(3) switch
                {
                    0 => Gpa((ulong)rng.Next(0x20000, GuestRing.MemorySize)),
                    1 => (ulong)rng.NextInt64(),
                    _ => Gpa(0x30000),
                };
                _g.SetDescriptor(rng.Next(64), address, (uint)rng.Next(0, 9000), (ushort)rng.Next(8), (ushort)rng.Next(70));
            }

            // Sometimes a plausible header.
            BinaryPrimitives.WriteUInt32LittleEndian(new Span<byte>(_g.Host + 0x30000, 4), (uint)rng.Next(0, 16));
            BinaryPrimitives.WriteUInt64LittleEndian(new Span<byte>(_g.Host + 0x30008, 8), (ulong)rng.Next(0, 4096));
            _g.MakeAvailable((ushort)rng.Next(70));
            _blk.Process();
            _queue.Poll(0, 0);
        }

        while (_queue.InFlight > 0)
        {
            _queue.Poll();
        }

        new Span<byte>(_g.Host + 0x20000, 512).Fill(0x11);
        Request(40, VirtioBlk.TypeOut, 1, 0x20000, 512, false, 0x31000, 0x31100);
        Run();
        Assert.Equal(VirtioBlk.StatusOk, _g.Host[0x31100]);
        Assert.True(_blk.Malformed > 1000);
    }
}
