using Hci.Core.Blocks;

namespace Hci.Transport.Scsi;

/// <summary>What a transport does with a command after <see cref="ScsiDisk.PrepareFast"/>.</summary>
internal enum ScsiFastPath
{
    /// <summary>Not a plain read or write: run it with <see cref="ScsiDisk.ExecuteAsync"/>.</summary>
    Slow,

    /// <summary>Finished already (refused, or nothing to move): answer with the task's status.</summary>
    Done,

    /// <summary>Submit the one request described to the transport's own queue on the unit's device.</summary>
    Submit,
}

/// <summary>The data path: READ and WRITE mapped onto one block request the transport runs on its own queue.</summary>
public sealed partial class ScsiDisk
{
    /// <summary>
    /// Decides how a command runs. READ and WRITE (6, 10, 12, 16) that pass every check become one block request
    /// at <paramref name="offset"/> of <paramref name="length"/> bytes over the task's buffer, which the transport
    /// submits on a queue it owns (no allocation, no thread hop); anything else goes through
    /// <see cref="ExecuteAsync"/>. The checks are the same as <see cref="ExecuteAsync"/> makes.
    /// </summary>
    /// <param name="task">The command.</param>
    /// <param name="operation">Read or write, when the answer is <see cref="ScsiFastPath.Submit"/>.</param>
    /// <param name="offset">Byte offset on the device.</param>
    /// <param name="length">Bytes to move (a whole number of blocks, at most the task's buffer).</param>
    /// <param name="flags">Request flags (force unit access).</param>
    /// <returns>What to do next.</returns>
    internal ScsiFastPath PrepareFast(ScsiTask task, out BlockOperation operation, out long offset, out int length, out BlockRequestFlags flags)
    {
        operation = BlockOperation.Read;
        offset = 0;
        length = 0;
        flags = BlockRequestFlags.None;
        bool write;
        switch (task.Cdb[0])
        {
            case ScsiOpcode.Read6 or ScsiOpcode.Read10 or ScsiOpcode.Read12 or ScsiOpcode.Read16:
                write = false;
                break;
            case ScsiOpcode.Write6 or ScsiOpcode.Write10 or ScsiOpcode.Write12 or ScsiOpcode.Write16:
                write = true;
                break;
            case ScsiOpcode.SynchronizeCache10 or ScsiOpcode.SynchronizeCache16 when _device.Supports(BlockDeviceCapabilities.Flush):
                // SYNCHRONIZE CACHE: the whole device's cache (the range is a hint SBC lets a unit widen).
                task.Status = ScsiStatus.Good;
                task.DataLength = 0;
                if (!Admit(task))
                {
                    return ScsiFastPath.Done;
                }

                operation = BlockOperation.Flush;
                return ScsiFastPath.Submit;
            default:
                return ScsiFastPath.Slow;
        }

        task.Status = ScsiStatus.Good;
        task.DataLength = 0;

        // A write counts itself in before it is admitted, and out when the device has done it (CompleteFast): a
        // COMPARE AND WRITE or PREEMPT AND ABORT waits for it (see ScsiDisk.Atomic.cs).
        int token = write ? EnterWrite(task.Nexus) : -1;
        var next = Check(task, write, ref offset, ref length, ref flags);
        if (next == ScsiFastPath.Submit)
        {
            operation = write ? BlockOperation.Write : BlockOperation.Read;
            task.WriteToken = token;
        }
        else if (token >= 0)
        {
            ExitWrite(token);
        }

        return next;
    }

    private ScsiFastPath Check(ScsiTask task, bool write, ref long offset, ref int length, ref BlockRequestFlags flags)
    {
        if (!Admit(task) || !CheckTransfer(task, write, out offset, out length, out byte cdbFlags))
        {
            return ScsiFastPath.Done;
        }

        if (task.DataLength > DeviceTransferBytes)
        {
            return ScsiFastPath.Slow; // more than one request: the slow path moves it in pieces
        }

        bool fua = write && ((cdbFlags & CdbFlags.ForceUnitAccess) != 0 || !_writeCache);
        if (fua && !_device.Supports(BlockDeviceCapabilities.ForceUnitAccess))
        {
            return ScsiFastPath.Slow; // emulated with a flush after the write: the slow path does that
        }

        if (length == 0)
        {
            return ScsiFastPath.Done;
        }

        if (write && OverlapsAtomic(offset, length))
        {
            return ScsiFastPath.Slow; // a COMPARE AND WRITE holds the range: the slow path waits for it
        }

        flags = fua ? BlockRequestFlags.ForceUnitAccess : BlockRequestFlags.None;
        return ScsiFastPath.Submit;
    }

    /// <summary>
    /// The checks every READ, WRITE (and WRITE AND VERIFY) passes, on the fast path and off it: protection field,
    /// range, write protection, transfer limit. Sets <see cref="ScsiTask.DataLength"/> to the transfer the CDB
    /// describes; <paramref name="length"/> is what both sides expect, whole blocks that the task's buffer holds
    /// (the transport reports the difference as a residual).
    /// </summary>
    private bool CheckTransfer(ScsiTask task, bool write, out long offset, out int length, out byte cdbFlags)
    {
        (ulong lba, ulong blocks, cdbFlags) = Decode(task.Cdb);
        offset = (long)lba * _blockSize;
        length = 0;
        if (ProtectField(task) || !Range(task, lba, blocks))
        {
            return false;
        }

        if (write && _device.Supports(BlockDeviceCapabilities.ReadOnly))
        {
            task.Fail(SenseKey.DataProtect, Asc.WriteProtected);
            return false;
        }

        long bytes = (long)blocks * _blockSize;
        if (bytes > MaxTransferBytes)
        {
            task.Fail(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
            return false;
        }

        task.DataLength = (int)bytes;
        int buffer = task.Buffer?.Length ?? 0;
        int have = (int)Math.Min(bytes, Math.Min(task.ExpectedLength, buffer));
        length = have / _blockSize * _blockSize;
        if (!write && length < have)
        {
            // The initiator expects part of a block: the whole block is read, so that what it gets is data, never
            // what the buffer held before; where the buffer cannot take the block, the part is cleared.
            if (length + _blockSize <= buffer)
            {
                length += _blockSize;
            }
            else
            {
                task.Buffer!.Span[length..have].Clear();
            }
        }

        return true;
    }

    /// <summary>Records how a request from <see cref="PrepareFast"/> ended (without its errno: a medium error).</summary>
    /// <param name="task">The command.</param>
    /// <param name="write">Whether it wrote.</param>
    /// <param name="succeeded">Whether the device did it.</param>
    internal void CompleteFast(ScsiTask task, bool write, bool succeeded)
        => CompleteFast(task, write ? BlockOperation.Write : BlockOperation.Read, succeeded ? BlockError.None : BlockError.Device, 0);

    /// <summary>
    /// Records how a request from <see cref="PrepareFast"/> ended, reporting a failure with the sense its error and
    /// errno call for (a thin device out of space is DATA PROTECT, not a medium error).
    /// </summary>
    /// <param name="task">The command.</param>
    /// <param name="request">The completed request.</param>
    internal void CompleteFast(ScsiTask task, BlockRequest request) => CompleteFast(task, request.Operation, request.Error, request.Errno);

    private void CompleteFast(ScsiTask task, BlockOperation operation, BlockError error, int errno)
    {
        if (task.WriteToken >= 0)
        {
            ExitWrite(task.WriteToken);
            task.WriteToken = -1;
        }

        if (error != BlockError.None)
        {
            var (key, sense) = ScsiDeviceErrors.SenseFor(operation, error, errno);
            task.Fail(key, sense);
        }
    }
}

/// <summary>Which way a command moves data (for a transport's check of its own direction bits).</summary>
internal enum ScsiDataDirection
{
    /// <summary>An opcode this unit does not know: the unit answers it.</summary>
    Unknown,

    /// <summary>No data.</summary>
    None,

    /// <summary>From the unit to the initiator (a read).</summary>
    In,

    /// <summary>From the initiator to the unit (a write).</summary>
    Out,
}

/// <summary>Command directions.</summary>
public sealed partial class ScsiDisk
{
    /// <summary>The direction a CDB moves data in, as the standards define its opcode.</summary>
    /// <param name="cdb">The CDB.</param>
    /// <returns>The direction; <see cref="ScsiDataDirection.Unknown"/> for opcodes this unit does not serve.</returns>
    internal static ScsiDataDirection DirectionOf(ReadOnlySpan<byte> cdb) => cdb[0] switch
    {
        ScsiOpcode.TestUnitReady or ScsiOpcode.StartStopUnit or ScsiOpcode.PreventAllowMediumRemoval or ScsiOpcode.SynchronizeCache10
            or ScsiOpcode.SynchronizeCache16 or ScsiOpcode.PreFetch10 or ScsiOpcode.PreFetch16 or ScsiOpcode.Reserve6 or ScsiOpcode.Reserve10
            or ScsiOpcode.Release6 or ScsiOpcode.Release10 => ScsiDataDirection.None,
        ScsiOpcode.Read6 or ScsiOpcode.Read10 or ScsiOpcode.Read12 or ScsiOpcode.Read16 or ScsiOpcode.RequestSense or ScsiOpcode.Inquiry
            or ScsiOpcode.ReadCapacity10 or ScsiOpcode.ServiceActionIn16 or ScsiOpcode.MaintenanceIn or ScsiOpcode.ModeSense6 or ScsiOpcode.ModeSense10
            or ScsiOpcode.PersistentReserveIn or ScsiOpcode.ReadDefectData10 or ScsiOpcode.ReadDefectData12 or ScsiOpcode.ReportLuns => ScsiDataDirection.In,
        ScsiOpcode.Write6 or ScsiOpcode.Write10 or ScsiOpcode.Write12 or ScsiOpcode.Write16 or ScsiOpcode.WriteAndVerify10 or ScsiOpcode.WriteAndVerify12
            or ScsiOpcode.WriteAndVerify16 or ScsiOpcode.WriteSame10 or ScsiOpcode.WriteSame16 or ScsiOpcode.Unmap or ScsiOpcode.CompareAndWrite
            or ScsiOpcode.OrWrite16 or ScsiOpcode.WriteAtomic16 or ScsiOpcode.ModeSelect6 or ScsiOpcode.ModeSelect10 or ScsiOpcode.PersistentReserveOut => ScsiDataDirection.Out,
        ScsiOpcode.Verify10 or ScsiOpcode.Verify12 or ScsiOpcode.Verify16 => ((cdb[1] >> 1) & 3) == 0 ? ScsiDataDirection.None : ScsiDataDirection.Out, // BYTCHK
        _ => ScsiDataDirection.Unknown,
    };
}
