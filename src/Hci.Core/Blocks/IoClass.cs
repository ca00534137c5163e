namespace Hci.Core.Blocks;

/// <summary>Who issued a request, as the schedulers see it.</summary>
public enum IoClass : byte
{
    /// <summary>A virtual machine behind I/O virtualization (virtio, iSCSI): slower per I/O, and able to wait.</summary>
    Vm = 0,

    /// <summary>A container or host process reaching the controller without I/O virtualization.</summary>
    Container = 1,

    /// <summary>The storage system's own work: rebuild, scrub, rebalance.</summary>
    Background = 2,
}
