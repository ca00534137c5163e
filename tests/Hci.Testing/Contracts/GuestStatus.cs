namespace Hci.Testing;

/// <summary>How a front-end answered a guest's request, in terms every front-end can be held to.</summary>
public enum GuestStatus
{
    /// <summary>Done: virtio-blk VIRTIO_BLK_S_OK, SCSI GOOD.</summary>
    Good,

    /// <summary>Failed without a named cause: virtio-blk VIRTIO_BLK_S_IOERR, whatever the reason.</summary>
    Error,

    /// <summary>Refused because it reaches past the last block: SCSI ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE.</summary>
    OutOfRange,

    /// <summary>Refused because the export is read-only: SCSI DATA PROTECT, WRITE PROTECTED.</summary>
    WriteProtected,

    /// <summary>The front-end does not carry the operation: virtio-blk VIRTIO_BLK_S_UNSUPP, SCSI INVALID COMMAND OPERATION CODE.</summary>
    Unsupported,
}
