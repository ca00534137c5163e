namespace Hci.Core.Devices;

/// <summary>Which engine carries a device's I/O.</summary>
public enum BlockEngine
{
    /// <summary>io_uring where the kernel allows it, else the portable file engine (with one warning).</summary>
    Auto = 0,

    /// <summary>Linux io_uring: batched submission, registered file and buffers, one ring per queue.</summary>
    IoUring,

    /// <summary>Portable positional I/O (RandomAccess); for machines where io_uring is disabled.</summary>
    File,

    /// <summary>Process memory; volatile.</summary>
    Memory,

    /// <summary>Completes at once and stores nothing, like Linux null_blk.</summary>
    Null,
}
