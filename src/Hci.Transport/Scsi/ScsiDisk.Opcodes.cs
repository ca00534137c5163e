using System.Buffers.Binary;

namespace Hci.Transport.Scsi;

/// <summary>REPORT SUPPORTED OPERATION CODES (SPC-4 6.35): the commands this unit runs, with their CDB usage data.</summary>
public sealed partial class ScsiDisk
{
    // Nominal and recommended command timeouts reported in the timeouts descriptor, in seconds.
    private const uint NominalTimeout = 1;
    private const uint RecommendedTimeout = 30;

    // One entry per command (per service action where the opcode has them). Usage data: byte 0 is the opcode (filled
    // in from the entry's opcode), then for each CDB byte the bits the device server looks at (SPC-4 table 255). REPORT LUNS is answered by the
    // transport, but it is a command of this logical unit all the same.
    private static readonly Command[] Commands =
    [
        new(ScsiOpcode.TestUnitReady, null, [0, 0, 0, 0, 0]), // TEST UNIT READY
        new(ScsiOpcode.RequestSense, null, [0x01, 0, 0, 0xFF, 0]), // REQUEST SENSE
        new(ScsiOpcode.Read6, null, [0x1F, 0xFF, 0xFF, 0xFF, 0]), // READ 6
        new(ScsiOpcode.Write6, null, [0x1F, 0xFF, 0xFF, 0xFF, 0]), // WRITE 6
        new(ScsiOpcode.Inquiry, null, [0x01, 0xFF, 0xFF, 0xFF, 0]), // INQUIRY
        new(ScsiOpcode.ModeSelect6, null, [0x11, 0, 0, 0xFF, 0]), // MODE SELECT 6
        new(ScsiOpcode.Reserve6, null, [0, 0, 0, 0, 0]), // RESERVE 6
        new(ScsiOpcode.Release6, null, [0, 0, 0, 0, 0]), // RELEASE 6
        new(ScsiOpcode.ModeSense6, null, [0x08, 0xFF, 0xFF, 0xFF, 0]), // MODE SENSE 6
        new(ScsiOpcode.StartStopUnit, null, [0x01, 0, 0x0F, 0xF7, 0]), // START STOP UNIT
        new(ScsiOpcode.PreventAllowMediumRemoval, null, [0, 0, 0, 0x03, 0]), // PREVENT ALLOW MEDIUM REMOVAL
        new(ScsiOpcode.ReadCapacity10, null, [0, 0, 0, 0, 0, 0, 0, 0, 0]), // READ CAPACITY 10
        new(ScsiOpcode.Read10, null, [0xF8, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0]), // READ 10
        new(ScsiOpcode.Write10, null, [0xF8, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0]), // WRITE 10
        new(ScsiOpcode.WriteAndVerify10, null, [0xF2, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0]), // WRITE AND VERIFY 10
        new(ScsiOpcode.Verify10, null, [0xF6, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0]), // VERIFY 10
        new(ScsiOpcode.PreFetch10, null, [0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0]), // PRE-FETCH 10
        new(ScsiOpcode.SynchronizeCache10, null, [0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0]), // SYNCHRONIZE CACHE 10
        new(ScsiOpcode.ReadDefectData10, null, [0, 0x1F, 0, 0, 0, 0, 0xFF, 0xFF, 0]), // READ DEFECT DATA 10
        new(ScsiOpcode.WriteSame10, null, [0xF8, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0]), // WRITE SAME 10
        new(ScsiOpcode.Unmap, null, [0, 0, 0, 0, 0, 0x1F, 0xFF, 0xFF, 0]), // UNMAP
        new(ScsiOpcode.ModeSelect10, null, [0x11, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0]), // MODE SELECT 10
        new(ScsiOpcode.Reserve10, null, [0, 0, 0, 0, 0, 0, 0, 0, 0]), // RESERVE 10
        new(ScsiOpcode.Release10, null, [0, 0, 0, 0, 0, 0, 0, 0, 0]), // RELEASE 10
        new(ScsiOpcode.ModeSense10, null, [0x18, 0xFF, 0xFF, 0, 0, 0, 0xFF, 0xFF, 0]), // MODE SENSE 10
        new(ScsiOpcode.PersistentReserveIn, ScsiServiceAction.ReadKeys, [0x1F, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0]), // PERSISTENT RESERVE IN: READ KEYS
        new(ScsiOpcode.PersistentReserveIn, ScsiServiceAction.ReadReservation, [0x1F, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0]), // READ RESERVATION
        new(ScsiOpcode.PersistentReserveIn, ScsiServiceAction.ReportCapabilities, [0x1F, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0]), // REPORT CAPABILITIES
        new(ScsiOpcode.PersistentReserveIn, ScsiServiceAction.ReadFullStatus, [0x1F, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0]), // READ FULL STATUS
        new(ScsiOpcode.PersistentReserveOut, ScsiServiceAction.Register, [0x1F, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0]), // PERSISTENT RESERVE OUT: REGISTER
        new(ScsiOpcode.PersistentReserveOut, ScsiServiceAction.Reserve, [0x1F, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0]), // RESERVE
        new(ScsiOpcode.PersistentReserveOut, ScsiServiceAction.Release, [0x1F, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0]), // RELEASE
        new(ScsiOpcode.PersistentReserveOut, ScsiServiceAction.Clear, [0x1F, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0]), // CLEAR
        new(ScsiOpcode.PersistentReserveOut, ScsiServiceAction.Preempt, [0x1F, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0]), // PREEMPT
        new(ScsiOpcode.PersistentReserveOut, ScsiServiceAction.PreemptAndAbort, [0x1F, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0]), // PREEMPT AND ABORT
        new(ScsiOpcode.PersistentReserveOut, ScsiServiceAction.RegisterAndIgnoreExistingKey, [0x1F, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0]), // REGISTER AND IGNORE EXISTING KEY
        new(ScsiOpcode.Read16, null, [0xF8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0]), // READ 16
        new(ScsiOpcode.CompareAndWrite, null, [0xF8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0xFF, 0x1F, 0]), // COMPARE AND WRITE
        new(ScsiOpcode.Write16, null, [0xF8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0]), // WRITE 16
        new(ScsiOpcode.OrWrite16, null, [0xF8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0]), // ORWRITE 16
        new(ScsiOpcode.WriteAndVerify16, null, [0xF2, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0]), // WRITE AND VERIFY 16
        new(ScsiOpcode.Verify16, null, [0xF6, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0]), // VERIFY 16
        new(ScsiOpcode.PreFetch16, null, [0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0]), // PRE-FETCH 16
        new(ScsiOpcode.SynchronizeCache16, null, [0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0]), // SYNCHRONIZE CACHE 16
        new(ScsiOpcode.WriteSame16, null, [0xF9, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0]), // WRITE SAME 16
        new(ScsiOpcode.WriteAtomic16, null, [0xF8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0xFF, 0xFF, 0x1F, 0]), // WRITE ATOMIC 16 (no atomic boundary)
        new(ScsiOpcode.ServiceActionIn16, ScsiServiceAction.ReadCapacity16, [0x1F, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0]), // READ CAPACITY 16
        new(ScsiOpcode.ServiceActionIn16, ScsiServiceAction.GetLbaStatus, [0x1F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0]), // GET LBA STATUS
        new(ScsiOpcode.ReportLuns, null, [0, 0xFF, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0]), // REPORT LUNS
        new(ScsiOpcode.MaintenanceIn, ScsiServiceAction.ReportSupportedOperationCodes, [0x1F, 0x87, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0]), // REPORT SUPPORTED OPERATION CODES
        new(ScsiOpcode.Read12, null, [0xF8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0]), // READ 12
        new(ScsiOpcode.Write12, null, [0xF8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0]), // WRITE 12
        new(ScsiOpcode.WriteAndVerify12, null, [0xF2, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0]), // WRITE AND VERIFY 12
        new(ScsiOpcode.Verify12, null, [0xF6, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0]), // VERIFY 12
        new(ScsiOpcode.ReadDefectData12, null, [0x1F, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0]), // READ DEFECT DATA 12
    ];

    private void ReportSupportedOperationCodes(ScsiTask task)
    {
        byte[] cdb = task.Cdb;
        bool timeouts = (cdb[2] & 0x80) != 0; // RCTD
        int options = cdb[2] & 0x07;
        byte opcode = cdb[3];
        ushort action = BinaryPrimitives.ReadUInt16BigEndian(cdb.AsSpan(4));
        if (options == 0)
        {
            int each = 8 + (timeouts ? 12 : 0);
            var all = new byte[4 + (each * Commands.Length)];
            BinaryPrimitives.WriteUInt32BigEndian(all, (uint)(all.Length - 4));
            for (int i = 0; i < Commands.Length; i++)
            {
                var c = Commands[i];
                var d = all.AsSpan(4 + (i * each), each);
                d[0] = c.Opcode;
                BinaryPrimitives.WriteUInt16BigEndian(d[2..], c.Action ?? 0);
                d[5] = (byte)((timeouts ? 2 : 0) | (c.Action.HasValue ? 1 : 0)); // CTDP, SERVACTV
                BinaryPrimitives.WriteUInt16BigEndian(d[6..], (ushort)c.Usage.Length);
                if (timeouts)
                {
                    WriteTimeouts(d[8..]);
                }
            }

            Reply(task, all);
            return;
        }

        // 1: by opcode (refused for an opcode with service actions); 2: by opcode and service action (refused for
        // one without); 3: by opcode, and service action where the opcode has them.
        bool hasActions = Array.Exists(Commands, c => c.Opcode == opcode && c.Action.HasValue);
        if (options > 3 || (options == 1 && hasActions) || (options == 2 && !hasActions && IsKnownOpcode(opcode)))
        {
            task.Fail(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
            return;
        }

        var found = Array.Find(Commands, c => c.Opcode == opcode && (!c.Action.HasValue || c.Action == action));
        if (options == 2 && !hasActions)
        {
            found = null; // an opcode this unit does not have: reported as not supported
        }

        int usage = found?.Usage.Length ?? 0;
        var one = new byte[4 + usage + (timeouts ? 12 : 0)];
        one[1] = (byte)((timeouts ? 0x80 : 0) | (found != null ? 0x03 : 0x01)); // CTDP, SUPPORT
        BinaryPrimitives.WriteUInt16BigEndian(one.AsSpan(2), (ushort)usage);
        found?.Usage.CopyTo(one, 4);
        if (timeouts)
        {
            WriteTimeouts(one.AsSpan(4 + usage));
        }

        Reply(task, one);
    }

    private static bool IsKnownOpcode(byte opcode) => Array.Exists(Commands, c => c.Opcode == opcode);

    private static void WriteTimeouts(Span<byte> d)
    {
        BinaryPrimitives.WriteUInt16BigEndian(d, 10); // descriptor length
        BinaryPrimitives.WriteUInt32BigEndian(d[4..], NominalTimeout);
        BinaryPrimitives.WriteUInt32BigEndian(d[8..], RecommendedTimeout);
    }

    private sealed record Command(byte Opcode, ushort? Action, byte[] UsageAfterOpcode)
    {
        public byte[] Usage { get; } = [Opcode, .. UsageAfterOpcode];
    }
}
