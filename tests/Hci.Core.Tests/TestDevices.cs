using Hci.Core.Blocks;
using Hci.Core.Devices;
using Hci.Core.Devices.Decorators;

namespace Hci.Core.Tests;

/// <summary>Makes a fresh device of each kind over a temporary file where one is needed.</summary>
internal sealed class TestDevice : IAsyncDisposable
{
    private readonly string? _path;

    private TestDevice(BlockDevice device, string? path)
    {
        Device = device;
        _path = path;
    }

    public BlockDevice Device { get; }

    /// <summary>The device behind a front-end, where the test can look at it directly; none for these kinds.</summary>
    public BlockDevice? Backing => null;

    /// <summary>What each kind promises (its capability flags), written here rather than read from the device.</summary>
    public static BlockDeviceCapabilities Promises(DeviceKind kind)
    {
        const BlockDeviceCapabilities Stores = BlockDeviceCapabilities.Flush | BlockDeviceCapabilities.ForceUnitAccess | BlockDeviceCapabilities.Discard
            | BlockDeviceCapabilities.DiscardZeroesData | BlockDeviceCapabilities.WriteZeroes | BlockDeviceCapabilities.PersistentData;
        return kind switch
        {
            // io_uring on a file: punch-hole discard (reads zeroes), zero-range write-zeroes, RWF_DSYNC for FUA.
            DeviceKind.IoUring or DeviceKind.IoUringBuffered => Stores,

            // Portable positional I/O: no discard and no FUA, write-zeroes by writing zeroes.
            DeviceKind.File => BlockDeviceCapabilities.Flush | BlockDeviceCapabilities.WriteZeroes | BlockDeviceCapabilities.PersistentData,
            DeviceKind.Memory or DeviceKind.FaultPassThrough or DeviceKind.DelayPassThrough => Stores,

            // null_blk: accepts everything, stores nothing, so no persistent data and no discard-zeroes promise.
            DeviceKind.Null => BlockDeviceCapabilities.Flush | BlockDeviceCapabilities.ForceUnitAccess | BlockDeviceCapabilities.Discard | BlockDeviceCapabilities.WriteZeroes,
            _ => throw new ArgumentOutOfRangeException(nameof(kind)),
        };
    }

    public static readonly long DefaultSize = 16L << 20;

    /// <summary>Whether data written to a device of this kind can be read back.</summary>
    public static bool IsPersistent(DeviceKind kind) => kind != DeviceKind.Null;

    public static TestDevice Create(DeviceKind kind, long size = 0)
    {
        size = size == 0 ? DefaultSize : size;
        string? path = kind is DeviceKind.IoUring or DeviceKind.IoUringBuffered or DeviceKind.File ? TempPath() : null;
        BlockDevice device = kind switch
        {
            DeviceKind.IoUring => BlockDevices.Open(new BlockDeviceOptions { Engine = BlockEngine.IoUring, Path = path, Size = size }),
            DeviceKind.IoUringBuffered => BlockDevices.Open(new BlockDeviceOptions { Engine = BlockEngine.IoUring, Path = path, Size = size, Direct = false }),
            DeviceKind.File => BlockDevices.Open(new BlockDeviceOptions { Engine = BlockEngine.File, Path = path, Size = size }),
            DeviceKind.Memory => new MemoryBlockDevice(size),
            DeviceKind.Null => new NullBlockDevice(size),
            DeviceKind.FaultPassThrough => new FaultInjectionBlockDevice(new MemoryBlockDevice(size)),
            DeviceKind.DelayPassThrough => new DelayBlockDevice(new MemoryBlockDevice(size), TimeSpan.FromMilliseconds(0.2), TimeSpan.FromMilliseconds(0.1)),
            _ => throw new ArgumentOutOfRangeException(nameof(kind)),
        };
        return new TestDevice(device, path);
    }

    /// <summary>A fresh path on a file system that takes O_DIRECT (tmpfs does not).</summary>
    public static string TempPath()
    {
        foreach (var dir in new[] { Environment.GetEnvironmentVariable("HCI_TEST_DIR"), "/var/tmp", Path.GetTempPath(), AppContext.BaseDirectory })
        {
            if (string.IsNullOrEmpty(dir) || !Directory.Exists(dir))
            {
                continue;
            }

            string probe = Path.Combine(dir, $"hci-test-{Guid.NewGuid():N}.img");
            if (TakesDirectIo(probe))
            {
                return probe;
            }
        }

        throw new InvalidOperationException("No directory here takes O_DIRECT; set HCI_TEST_DIR.");
    }

    private static unsafe bool TakesDirectIo(string path)
    {
        var bytes = System.Text.Encoding.UTF8.GetBytes(path + "\0");
        fixed (byte* p = bytes)
        {
            int fd = Tmds.Linux.LibC.open(p, Tmds.Linux.LibC.O_RDWR | Tmds.Linux.LibC.O_CREAT | Tmds.Linux.LibC.O_DIRECT | Tmds.Linux.LibC.O_CLOEXEC, (ushort)0x1B0);
            if (fd < 0)
            {
                File.Delete(path);
                return false;
            }

            Tmds.Linux.LibC.close(fd);
            File.Delete(path);
            return true;
        }
    }

    public async ValueTask DisposeAsync()
    {
        await Device.DisposeAsync();
        if (_path != null)
        {
            File.Delete(_path);
        }
    }
}
