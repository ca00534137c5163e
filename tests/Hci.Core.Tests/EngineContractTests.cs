using Hci.Core.Blocks;
using Hci.Core.Devices;
using Hci.Core.Devices.Decorators;
using Hci.Testing;

namespace Hci.Core.Tests;

// The block device contract (Hci.Testing's BlockDeviceContract) over every engine and decorator in Hci.Core: each
// class says how to make a fresh device and what it promises; the tests are the contract's.

/// <summary>io_uring on a file with O_DIRECT: punch-hole discard (reads zeroes), zero-range write-zeroes, RWF_DSYNC for FUA.</summary>
public sealed class IoUringDeviceContractTests : StoringBlockDeviceContract
{
    protected override BlockDeviceCapabilities Promises => CoreDevices.Stores;

    protected override DeviceUnderTest Create(long size) => CoreDevices.IoUring(size);
}

/// <summary>io_uring on a file through the page cache.</summary>
public sealed class BufferedIoUringDeviceContractTests : StoringBlockDeviceContract
{
    protected override BlockDeviceCapabilities Promises => CoreDevices.Stores;

    protected override DeviceUnderTest Create(long size) => CoreDevices.IoUring(size, direct: false);
}

/// <summary>Portable positional I/O: no discard and no FUA, write-zeroes by writing zeroes.</summary>
public sealed class FileDeviceContractTests : StoringBlockDeviceContract
{
    protected override BlockDeviceCapabilities Promises => BlockDeviceCapabilities.Flush | BlockDeviceCapabilities.WriteZeroes | BlockDeviceCapabilities.PersistentData;

    protected override DeviceUnderTest Create(long size) => CoreDevices.File(size);
}

/// <summary>Memory.</summary>
public sealed class MemoryDeviceContractTests : StoringBlockDeviceContract
{
    protected override BlockDeviceCapabilities Promises => CoreDevices.Stores;

    protected override DeviceUnderTest Create(long size) => new(new MemoryBlockDevice(size));
}

/// <summary>null_blk: accepts everything, stores nothing, so no persistent data and no discard-zeroes promise.</summary>
public sealed class NullDeviceContractTests : BlockDeviceContract
{
    protected override BlockDeviceCapabilities Promises => BlockDeviceCapabilities.Flush | BlockDeviceCapabilities.ForceUnitAccess | BlockDeviceCapabilities.Discard | BlockDeviceCapabilities.WriteZeroes;

    protected override DeviceUnderTest Create(long size) => new(new NullBlockDevice(size));
}

/// <summary>The fault-injection decorator with no rule: it passes everything through to memory.</summary>
public sealed class FaultPassThroughDeviceContractTests : StoringBlockDeviceContract
{
    protected override BlockDeviceCapabilities Promises => CoreDevices.Stores;

    protected override DeviceUnderTest Create(long size) => new(new FaultInjectionBlockDevice(new MemoryBlockDevice(size)));
}

/// <summary>The delay decorator over memory, on the system clock.</summary>
public sealed class DelayPassThroughDeviceContractTests : StoringBlockDeviceContract
{
    protected override BlockDeviceCapabilities Promises => CoreDevices.Stores;

    protected override DeviceUnderTest Create(long size) => new(new DelayBlockDevice(new MemoryBlockDevice(size), TimeSpan.FromMilliseconds(0.2), TimeSpan.FromMilliseconds(0.1)));
}
