using System.Buffers.Binary;
using Hci.Core.Blocks;

namespace Hci.Transport.Scsi;

/// <summary>
/// WRITE ATOMIC (16) (SBC-4 5.48, 4.29): a write that other commands see whole or not at all. It runs as COMPARE AND
/// WRITE does (ScsiDisk.Atomic.cs): every write admitted before it finishes first, overlapping writes wait for it,
/// and it reaches the device as one request, so its length is bounded by what the device takes at once.
/// </summary>
public sealed partial class ScsiDisk
{
    // Most blocks one WRITE ATOMIC covers (VPD B0h): one device request, within the CDB's 16-bit field, a whole
    // number of granules.
    private uint MaxAtomicBlocks => (uint)(Math.Clamp(DeviceTransferBytes / _blockSize, 1, ushort.MaxValue) / AtomicGranularity * AtomicGranularity);

    // Atomic writes cover whole 4 KiB pages (the unit the page cache and most SSDs write as one): on a 512-byte
    // block unit they start on, and span, a multiple of 8 blocks; on a unit of 4 KiB blocks or more, any block.
    private uint AtomicAlignment => (uint)Math.Max(1, 4096 / _blockSize);

    private uint AtomicGranularity => AtomicAlignment;

    private async ValueTask WriteAtomic(ScsiTask task)
    {
        byte[] cdb = task.Cdb;
        ulong lba = BinaryPrimitives.ReadUInt64BigEndian(cdb.AsSpan(2));
        ushort boundary = BinaryPrimitives.ReadUInt16BigEndian(cdb.AsSpan(10));
        uint blocks = BinaryPrimitives.ReadUInt16BigEndian(cdb.AsSpan(12));
        if (ProtectField(task))
        {
            return;
        }

        // No atomic boundaries (their maximum size is 0 in VPD B0h).
        if (boundary != 0)
        {
            task.Fail(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
            return;
        }

        // The range first (an LBA past the end is LBA OUT OF RANGE whatever the length), then the atomic limits.
        if (!Range(task, lba, blocks))
        {
            return;
        }

        if (lba % AtomicAlignment != 0 || blocks % AtomicGranularity != 0 || blocks > MaxAtomicBlocks)
        {
            task.Fail(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
            return;
        }

        long bytes = checked((long)blocks * _blockSize);
        task.DataLength = (int)bytes;
        if (blocks == 0)
        {
            return; // nothing to write (SBC-4: not an error)
        }

        if (_device.Supports(BlockDeviceCapabilities.ReadOnly))
        {
            task.Fail(SenseKey.DataProtect, Asc.WriteProtected);
            return;
        }

        // All or nothing: a Data-Out shorter than the blocks named is refused rather than written in part.
        if (task.Buffer == null || task.ExpectedLength < bytes || task.Buffer.Length < bytes)
        {
            task.Fail(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
            return;
        }

        int length = (int)bytes;
        long offset = checked((long)lba * _blockSize);
        await _compareAndWrite.WaitAsync();
        try
        {
            await ExcludeWritesAsync(offset, length);
            if (!StillAdmitted(task))
            {
                return;
            }

            // At most DeviceTransferBytes: WriteThrough sends it as one request.
            await WriteThrough(offset, task.Buffer.Memory[..length], (cdb[1] & CdbFlags.ForceUnitAccess) != 0);
        }
        finally
        {
            EndExclusion();
            _compareAndWrite.Release();
        }
    }
}
