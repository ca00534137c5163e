using Hci.Core.Blocks;
using Hci.Core.Buffers;
using Hci.Core.Devices;
using Hci.Core.Devices.Decorators;
using Hci.Transport.Vhost;
using Hci.Transport.Virtio;

namespace Hci.Transport.Tests;

/// <summary>
/// A device error (EIO from the device under the back-end) reaches the guest as VIRTIO_BLK_S_IOERR, only for the
/// request that hit it: on the ring itself (the processor through a fake guest ring), and end to end through the
/// Hci client, which raises it as EIO. Neighbouring requests and later ones succeed.
/// </summary>
public sealed class VhostDeviceErrorTests
{
    private const ushort Next = 1, DeviceWrites = 2;

    [Fact]
    public unsafe void AnEioFromTheDeviceAnswersIoErrOnTheRingAndOnlyForThatRequest()
    {
        using var g = new GuestRing(size: 64);
        using var device = new FaultInjectionBlockDevice(new MemoryBlockDevice(1 << 20, logicalBlockSize: 512));
        var fault = device.Add(new FaultRule(FaultKind.Error, offset: 64 * 512, length: 8 * 512, errno: Errno.EIO));
        using var queue = device.CreateQueue(64);
        using var blk = new VirtioBlkQueueProcessor(g.Queue, queue, "hci-test-serial", tenant: 1, () => { });
        void Run()
        {
            blk.Process();
            while (queue.InFlight > 0)
            {
                queue.Poll();
            }

            blk.FlushNotifications();
        }

        void Request(ushort first, uint type, ulong sector, ulong data, uint length, bool deviceWrites, ulong header, ulong status)
        {
            System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(new Span<byte>(g.Host + header, 4), type);
            System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(new Span<byte>(g.Host + header + 8, 8), sector);
            g.Host[status] = 0xFF;
            g.SetDescriptor(first, GuestRing.Base + header, 16, Next, (ushort)(first + 1));
            g.SetDescriptor(first + 1, GuestRing.Base + data, length, (ushort)(Next | (deviceWrites ? DeviceWrites : 0)), (ushort)(first + 2));
            g.SetDescriptor(first + 2, GuestRing.Base + status, 1, DeviceWrites, 0);
            g.MakeAvailable(first);
        }

        // A read and a write inside the faulty range, and a read just before it.
        Request(0, VirtioBlk.TypeIn, 64, 0x20000, 4096, true, 0x30000, 0x30100);
        Request(3, VirtioBlk.TypeOut, 68, 0x22000, 512, false, 0x30200, 0x30300);
        Request(6, VirtioBlk.TypeIn, 56, 0x24000, 4096, true, 0x30400, 0x30500);
        Run();
        Assert.Equal(VirtioBlk.StatusIoErr, g.Host[0x30100]);
        Assert.Equal(VirtioBlk.StatusIoErr, g.Host[0x30300]);
        Assert.Equal(VirtioBlk.StatusOk, g.Host[0x30500]);
        Assert.Equal(2, fault.Hits);

        // The device recovers: the same read now succeeds.
        device.Clear();
        Request(9, VirtioBlk.TypeIn, 64, 0x20000, 4096, true, 0x30600, 0x30700);
        Run();
        Assert.Equal(VirtioBlk.StatusOk, g.Host[0x30700]);
    }

    [Fact]
    public async Task AnEioFromTheDeviceUnderTheBackEndReachesTheClientAsEio()
    {
        string dir = Directory.CreateTempSubdirectory("hci-vhost-eio-").FullName;
        string socket = Path.Combine(dir, "s.sock");
        try
        {
            using var device = new FaultInjectionBlockDevice(new MemoryBlockDevice(16 << 20));
            var readFault = device.Add(new FaultRule(FaultKind.Error, offset: 1 << 20, length: 4096, operation: BlockOperation.Read, errno: Errno.EIO));
            var writeFault = device.Add(new FaultRule(FaultKind.Error, offset: 2 << 20, length: 4096, operation: BlockOperation.Write, errno: Errno.EIO));
            using var server = new VhostUserBlkServer(device, new VhostUserBlkServerOptions { SocketPath = socket, MaxQueues = 1, ReactorThreads = 1 });
            server.Start();
            await using var client = VhostUserBlkClient.Connect(new VhostUserBlkClientOptions { SocketPath = socket, QueueSize = 64 });
            using var buffer = new AlignedBuffer(4096);

            var ex = await Assert.ThrowsAsync<BlockDeviceException>(() => client.ReadAsync(1 << 20, buffer.Memory).AsTask());
            Assert.Equal(Errno.EIO, ex.Errno);
            Assert.Equal(BlockOperation.Read, ex.Operation);
            ex = await Assert.ThrowsAsync<BlockDeviceException>(() => client.WriteAsync(2 << 20, buffer.Memory).AsTask());
            Assert.Equal(Errno.EIO, ex.Errno);

            // Next to the faults, and afterwards, I/O goes on.
            buffer.Span.Fill(0x31);
            await client.WriteAsync((1 << 20) + 4096, buffer.Memory);
            buffer.Span.Clear();
            await client.ReadAsync((1 << 20) + 4096, buffer.Memory);
            Assert.True(buffer.Span.IndexOfAnyExcept((byte)0x31) < 0);
            Assert.Equal(1, readFault.Hits);
            Assert.Equal(1, writeFault.Hits);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
