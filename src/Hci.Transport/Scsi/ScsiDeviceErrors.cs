using Hci.Core.Blocks;

namespace Hci.Transport.Scsi;

/// <summary>
/// A failed block request in SCSI terms (SBC-3 4.18, SPC-4 annex D): the one place where the device's error and
/// errno become a sense key and additional sense code, so that an initiator sees why, and whether to retry.
/// </summary>
internal static class ScsiDeviceErrors
{
    /// <summary>The sense for a failed request.</summary>
    /// <param name="operation">What the request did.</param>
    /// <param name="error">Why it failed.</param>
    /// <param name="errno">The errno, when the device said (positive; 0 when not).</param>
    /// <returns>The sense key and the additional sense code and qualifier.</returns>
    public static (byte Key, Asc Sense) SenseFor(BlockOperation operation, BlockError error, int errno)
    {
        if (error == BlockError.ReadOnly || errno == Errno.EROFS)
        {
            return (SenseKey.DataProtect, Asc.WriteProtected);
        }

        if (errno == Errno.ENOSPC)
        {
            // A thin unit out of space: the write is refused, and the unit is write protected until space comes back.
            return (SenseKey.DataProtect, Asc.SpaceAllocationFailedWriteProtect);
        }

        if (error == BlockError.OutOfRange || errno is Errno.EINVAL or Errno.ERANGE)
        {
            return (SenseKey.IllegalRequest, Asc.LbaOutOfRange);
        }

        switch (error)
        {
            case BlockError.Misaligned or BlockError.TooLarge or BlockError.BadSegments:
                return (SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
            case BlockError.Unsupported:
                return (SenseKey.IllegalRequest, Asc.InvalidCommandOperationCode);
            case BlockError.Canceled:
                return (SenseKey.AbortedCommand, Asc.None); // the queue closed under it: the initiator may retry
        }

        if (errno == Errno.EOPNOTSUPP)
        {
            return (SenseKey.IllegalRequest, Asc.InvalidCommandOperationCode);
        }

        // EIO and anything else the device reports: a medium error, of the kind the operation names.
        return operation == BlockOperation.Read
            ? (SenseKey.MediumError, Asc.UnrecoveredReadError)
            : (SenseKey.MediumError, Asc.WriteError);
    }

    /// <summary>The sense for a failed request, from the exception the device's asynchronous API threw.</summary>
    /// <param name="e">The exception.</param>
    /// <returns>The sense key and the additional sense code and qualifier.</returns>
    public static (byte Key, Asc Sense) SenseFor(BlockDeviceException e) => SenseFor(e.Operation, e.Error, e.Errno);
}
