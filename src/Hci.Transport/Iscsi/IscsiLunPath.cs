using Hci.Core.Blocks;
using Hci.Transport.Scsi;

namespace Hci.Transport.Iscsi;

/// <summary>A LUN as one connection reaches it: the unit, and the queue its fast-path I/O goes through.</summary>
/// <param name="disk">The unit.</param>
internal sealed class IscsiLunPath(ScsiDisk disk)
{
    /// <summary>The unit.</summary>
    public ScsiDisk Disk { get; } = disk;

    /// <summary>The queue on the unit's device, opened on the first fast-path command.</summary>
    public BlockQueue? Queue { get; set; }
}
