using Hci.Core.Blocks;
using Hci.Core.Devices;
using Hci.Core.Devices.Decorators;
using Hci.Testing;

namespace Hci.Core.Tests;

/// <summary>Makes a fresh device of each engine in Hci.Core, over a temporary file where one is needed.</summary>
internal static class CoreDevices
{
    /// <summary>What a device that stores data in full promises: punch-hole discard (reads zeroes), write-zeroes, FUA.</summary>
    public const BlockDeviceCapabilities Stores = BlockDeviceCapabilities.Flush | BlockDeviceCapabilities.ForceUnitAccess | BlockDeviceCapabilities.Discard
        | BlockDeviceCapabilities.DiscardZeroesData | BlockDeviceCapabilities.WriteZeroes | BlockDeviceCapabilities.PersistentData;

    /// <summary>io_uring on a file, with O_DIRECT unless <paramref name="direct"/> is false.</summary>
    public static DeviceUnderTest IoUring(long size = BlockDeviceContract.DefaultSize, bool direct = true)
        => DeviceUnderTest.OverTempFile(path => BlockDevices.Open(new BlockDeviceOptions { Engine = BlockEngine.IoUring, Path = path, Size = size, Direct = direct }));

    /// <summary>Portable positional I/O on a file.</summary>
    public static DeviceUnderTest File(long size = BlockDeviceContract.DefaultSize)
        => DeviceUnderTest.OverTempFile(path => BlockDevices.Open(new BlockDeviceOptions { Engine = BlockEngine.File, Path = path, Size = size }));
}
