using Hci.Core.Blocks;
using Hci.Core.Devices;
using Hci.Transport.Vhost;

namespace Hci.Transport.Tests;

// The block device contract (Hci.Testing's BlockDeviceContract) through the vhost-user-blk client, against the Hci
// back-end and against an independent one. What the client reports for both: virtio-blk carries FLUSH, DISCARD and
// WRITE_ZEROES but no FUA and no "discard reads zeroes" promise, and the client does not claim persistence for a
// remote device; yet what is written reads back, so both run the storing contract.

/// <summary>The Hci client against the Hci back-end over a memory device.</summary>
public sealed class VhostUserHciDeviceContractTests : StoringBlockDeviceContract
{
    protected override BlockDeviceCapabilities Promises => VhostDevices.ClientPromises;

    protected override DeviceUnderTest Create(long size) => VhostDevices.AgainstHci(size);
}

/// <summary>The Hci client against qemu-storage-daemon's vhost-user-blk export of a raw file.</summary>
public sealed class VhostUserQsdDeviceContractTests : StoringBlockDeviceContract
{
    protected override BlockDeviceCapabilities Promises => VhostDevices.ClientPromises;

    protected override DeviceUnderTest Create(long size) => VhostDevices.AgainstQemuStorageDaemon(size);
}

/// <summary>A vhost-user-blk client connected to a fresh back-end.</summary>
internal static class VhostDevices
{
    public const BlockDeviceCapabilities ClientPromises = BlockDeviceCapabilities.Flush | BlockDeviceCapabilities.Discard | BlockDeviceCapabilities.WriteZeroes;

    /// <summary>The client against <see cref="VhostUserBlkServer"/> over <paramref name="backing"/> (a fresh memory device if null).</summary>
    public static DeviceUnderTest AgainstHci(long size, BlockDevice? backing = null, bool readOnly = false)
    {
        string dir = Directory.CreateTempSubdirectory("hci-vhost-").FullName;
        string socket = Path.Combine(dir, "s.sock");
        backing ??= new MemoryBlockDevice(size);
        var server = new VhostUserBlkServer(backing, new VhostUserBlkServerOptions { SocketPath = socket, MaxQueues = 8, ReactorThreads = 1, ReadOnly = readOnly });
        try
        {
            server.Start();
            var client = VhostUserBlkClient.Connect(new VhostUserBlkClientOptions { SocketPath = socket, QueueSize = 64 });
            return new DeviceUnderTest(client, backing, () =>
            {
                server.Dispose();
                backing.Dispose();
                Directory.Delete(dir, recursive: true);
                return ValueTask.CompletedTask;
            });
        }
        catch
        {
            server.Dispose();
            backing.Dispose();
            Directory.Delete(dir, recursive: true);
            throw;
        }
    }

    /// <summary>The client against qemu-storage-daemon exporting a raw file of <paramref name="size"/> bytes.</summary>
    public static DeviceUnderTest AgainstQemuStorageDaemon(long size)
    {
        string dir = Directory.CreateTempSubdirectory("hci-vhost-").FullName;
        string socket = Path.Combine(dir, "s.sock");
        var qsd = QemuStorageDaemon.Start(dir, socket, size);
        try
        {
            var client = VhostUserBlkClient.Connect(new VhostUserBlkClientOptions { SocketPath = socket, QueueSize = 64 });
            return new DeviceUnderTest(client, cleanUp: async () =>
            {
                qsd.Kill();
                await qsd.WaitForExitAsync();
                qsd.Dispose();
                Directory.Delete(dir, recursive: true);
            });
        }
        catch
        {
            qsd.Kill();
            qsd.Dispose();
            Directory.Delete(dir, recursive: true);
            throw;
        }
    }
}
