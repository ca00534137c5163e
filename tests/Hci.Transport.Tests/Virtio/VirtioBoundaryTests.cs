using System.Buffers.Binary;
using Hci.Core.Blocks;
using Hci.Core.Devices;
using Hci.Transport.Virtio;

namespace Hci.Transport.Tests;

/// <summary>
/// Chains whose lengths sit on the boundaries that random values miss (a descriptor of 2^31 bytes, aliased
/// descriptors adding up past 2^32), driven through <see cref="VirtioBlkQueueProcessor"/> on a fake guest.
/// Each must be answered in virtio terms before a byte moves; the ring then goes on serving.
/// </summary>
public sealed unsafe class VirtioBoundaryTests
{
    private const ushort Next = 1, Write = 2;

    /// <summary>Lays a chain at descriptors first.. : header, the data descriptors, status; makes it available.</summary>
    internal static ushort Chain(GuestRing g, ushort first, uint type, ulong sector, ulong header, ulong status, params (ulong Offset, uint Length, bool DeviceWrites)[] data)
    {
        Lay(g, first, type, sector, header, status, data);
        g.MakeAvailable(first);
        return first;
    }

    /// <summary>Lays a chain as <see cref="Chain"/> does without making it available.</summary>
    internal static ushort Lay(GuestRing g, ushort first, uint type, ulong sector, ulong header, ulong status, params (ulong Offset, uint Length, bool DeviceWrites)[] data)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(new Span<byte>(g.Host + header, 4), type);
        BinaryPrimitives.WriteUInt32LittleEndian(new Span<byte>(g.Host + header + 4, 4), 0);
        BinaryPrimitives.WriteUInt64LittleEndian(new Span<byte>(g.Host + header + 8, 8), sector);
        g.Host[status] = 0xFF;
        int d = first;
        g.SetDescriptor(d, GuestRing.Base + header, 16, Next, (ushort)(d + 1));
        d++;
        foreach (var (offset, length, writes) in data)
        {
            g.SetDescriptor(d, GuestRing.Base + offset, length, (ushort)(Next | (writes ? Write : 0)), (ushort)(d + 1));
            d++;
        }

        g.SetDescriptor(d, GuestRing.Base + status, 1, Write, 0);
        return first;
    }

    private static void Run(VirtioBlkQueueProcessor blk, BlockQueue queue)
    {
        blk.Process();
        while (queue.InFlight > 0)
        {
            queue.Poll();
        }

        blk.FlushNotifications();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AliasedDescriptorsAddingUpPastFourGibibytesBehindAMisalignedOneAreRefusedBeforeAnyCopy(bool deviceWrites)
    {
        // O_DIRECT device: a misaligned guest buffer goes through the bounce path. 128 descriptors of 32 MiB all
        // alias the same guest memory and, with the 4 KiB misaligned one, total 2^32 + 4096: cut to 32 bits that is
        // 4096, the size the bounce buffer used to get before gigabytes were copied into (or out of) it.
        string path = Path.Combine(Environment.GetEnvironmentVariable("HCI_TEST_DIR") ?? "/var/tmp", $"hci-bounds-{Guid.NewGuid():N}.img"); // O_DIRECT: not tmpfs
        using var device = BlockDevices.Open(new BlockDeviceOptions { Engine = BlockEngine.IoUring, Path = path, Size = 16 << 20, Direct = true });
        try
        {
            Assert.True(device.Geometry.BufferAlignment > 1, "the device must need aligned buffers for the bounce path to run");
            using var g = new GuestRing(size: 256, memoryLength: 64L << 20);
            using var queue = device.CreateQueue(16);
            using var blk = new VirtioBlkQueueProcessor(g.Queue, queue, "bounds", tenant: 0, signal: null);
            var data = new List<(ulong, uint, bool)> { (0x10001, 4096, deviceWrites) };
            for (int i = 0; i < 128; i++)
            {
                data.Add((0x100000, 32u << 20, deviceWrites));
            }

            uint type = deviceWrites ? VirtioBlk.TypeIn : VirtioBlk.TypeOut;
            Chain(g, 0, type, 0, 0x8000 + 0x1000, 0x8000 + 0x1100, [.. data]);
            Run(blk, queue);
            Assert.Equal(1, g.UsedIdx);
            Assert.Equal(VirtioBlk.StatusIoErr, g.Host[0x9100]);

            // A legitimate misaligned request still bounces and round-trips.
            new Span<byte>(g.Host + 0x20001, 4096).Fill(0x5A);
            Chain(g, 200, VirtioBlk.TypeOut, 8, 0xA000, 0xA100, (0x20001, 4096, false));
            Run(blk, queue);
            Assert.Equal(VirtioBlk.StatusOk, g.Host[0xA100]);
            Chain(g, 210, VirtioBlk.TypeIn, 8, 0xA200, 0xA300, (0x30003, 1000, true), (0x31005, 3096, true));
            Run(blk, queue);
            Assert.Equal(VirtioBlk.StatusOk, g.Host[0xA300]);
            Assert.True(new Span<byte>(g.Host + 0x30003, 1000).IndexOfAnyExcept((byte)0x5A) < 0);
            Assert.True(new Span<byte>(g.Host + 0x31005, 3096).IndexOfAnyExcept((byte)0x5A) < 0);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Theory]
    [InlineData(1u << 31)]
    [InlineData((1u << 31) + 512)]
    [InlineData(uint.MaxValue - 511)]
    public void ADescriptorOfTwoGibibytesOrMoreIsAnsweredWithAnErrorAndTheRingGoesOn(uint length)
    {
        using var device = new MemoryBlockDevice(1 << 20, logicalBlockSize: 512);
        using var g = new GuestRing(size: 64, memoryLength: (1L << 32) + (1 << 20));
        using var queue = device.CreateQueue(16);
        using var blk = new VirtioBlkQueueProcessor(g.Queue, queue, "bounds", tenant: 0, signal: null);
        Chain(g, 0, VirtioBlk.TypeIn, 0, 0x8000, 0x8100, (0x100000, length, true));
        Chain(g, 4, VirtioBlk.TypeOut, 0, 0x8200, 0x8300, (0x100000, length, false));
        Run(blk, queue);
        Assert.Equal(2, g.UsedIdx);
        Assert.Equal(VirtioBlk.StatusIoErr, g.Host[0x8100]);
        Assert.Equal(VirtioBlk.StatusIoErr, g.Host[0x8300]);

        Chain(g, 8, VirtioBlk.TypeIn, 0, 0x8400, 0x8500, (0x200000, 4096, true));
        Run(blk, queue);
        Assert.Equal(VirtioBlk.StatusOk, g.Host[0x8500]);
        Assert.Equal(0, blk.Faults);
    }

    [Fact]
    public void ATransferOfExactlyTheDevicesMaximumIsServedAndOneBlockMoreIsRefused()
    {
        using var device = new MemoryBlockDevice(4 << 20, logicalBlockSize: 512, maxTransferBytes: 1 << 20);
        using var g = new GuestRing(size: 64, memoryLength: 8L << 20);
        using var queue = device.CreateQueue(16);
        using var blk = new VirtioBlkQueueProcessor(g.Queue, queue, "bounds", tenant: 0, signal: null);
        Chain(g, 0, VirtioBlk.TypeIn, 0, 0x8000, 0x8100, (0x100000, 1u << 20, true));
        Chain(g, 4, VirtioBlk.TypeIn, 0, 0x8200, 0x8300, (0x100000, (1u << 20) + 512, true));
        Chain(g, 8, VirtioBlk.TypeIn, 0, 0x8400, 0x8500, (0x100000, 1u << 19, true), (0x100000, (1u << 19) + 512, true));
        Run(blk, queue);
        Assert.Equal(VirtioBlk.StatusOk, g.Host[0x8100]);
        Assert.Equal(VirtioBlk.StatusIoErr, g.Host[0x8300]);
        Assert.Equal(VirtioBlk.StatusIoErr, g.Host[0x8500]);
    }
}
