using Hci.Core.Buffers;

namespace Hci.Transport.Scsi;

/// <summary>SCSI status codes (SAM-5).</summary>
internal static class ScsiStatus
{
    /// <summary>GOOD.</summary>
    public const byte Good = 0x00;

    /// <summary>CHECK CONDITION: sense data describes why.</summary>
    public const byte CheckCondition = 0x02;

    /// <summary>CONDITION MET.</summary>
    public const byte ConditionMet = 0x04;

    /// <summary>BUSY.</summary>
    public const byte Busy = 0x08;

    /// <summary>RESERVATION CONFLICT.</summary>
    public const byte ReservationConflict = 0x18;

    /// <summary>TASK SET FULL.</summary>
    public const byte TaskSetFull = 0x28;
}

/// <summary>Sense keys (SPC-4, 4.5.6).</summary>
internal static class SenseKey
{
    /// <summary>NO SENSE.</summary>
    public const byte NoSense = 0x0;

    /// <summary>NOT READY.</summary>
    public const byte NotReady = 0x2;

    /// <summary>MEDIUM ERROR.</summary>
    public const byte MediumError = 0x3;

    /// <summary>HARDWARE ERROR.</summary>
    public const byte HardwareError = 0x4;

    /// <summary>ILLEGAL REQUEST.</summary>
    public const byte IllegalRequest = 0x5;

    /// <summary>UNIT ATTENTION.</summary>
    public const byte UnitAttention = 0x6;

    /// <summary>DATA PROTECT.</summary>
    public const byte DataProtect = 0x7;

    /// <summary>ABORTED COMMAND.</summary>
    public const byte AbortedCommand = 0xB;

    /// <summary>MISCOMPARE.</summary>
    public const byte Miscompare = 0xE;
}

/// <summary>
/// One SCSI command as a transport hands it to a logical unit: the CDB, the data buffer (written by the
/// initiator for a write, filled by the unit for a read), and on return the status, sense and how much data the
/// unit produced. Transport-neutral: iSCSI builds these, and so could any other SCSI transport.
/// </summary>
internal sealed class ScsiTask
{
    private readonly byte[] _sense = new byte[FixedSenseLength];

    /// <summary>The CDB (up to 16 bytes, zero padded).</summary>
    public byte[] Cdb { get; } = new byte[16];

    /// <summary>The initiator's expected data transfer length (bytes).</summary>
    public int ExpectedLength { get; set; }

    /// <summary>True when data flows from the initiator (a write).</summary>
    public bool DataOut { get; set; }

    /// <summary>The data buffer: at least <see cref="ExpectedLength"/> bytes; null when there is no data.</summary>
    public AlignedBuffer? Buffer { get; set; }

    /// <summary>The initiator this task came from (its I_T nexus), for reservations and tenants.</summary>
    public int Nexus { get; set; }

    /// <summary>
    /// The initiator port's name as its transport writes it (for iSCSI: <c>iqn...,i,0x&lt;ISID&gt;</c>), reported in
    /// PERSISTENT RESERVE IN READ FULL STATUS; null when the transport does not say (the nexus number is used).
    /// </summary>
    public string? InitiatorPort { get; set; }

    /// <summary>On return: the status.</summary>
    public byte Status { get; set; }

    /// <summary>
    /// On return: bytes the command moves as the CDB describes them (data-in produced, or for a read or write the
    /// transfer length), before truncation to <see cref="ExpectedLength"/>; the transport reports the difference as
    /// a residual. Zero when the command carries no length of its own.
    /// </summary>
    public int DataLength { get; set; }

    /// <summary>On return: sense data (fixed format) when <see cref="Status"/> is CHECK CONDITION.</summary>
    public ReadOnlySpan<byte> Sense => Status == ScsiStatus.CheckCondition ? _sense : default;

    /// <summary>Sets the task's result to CHECK CONDITION with fixed-format sense.</summary>
    /// <param name="key">The sense key.</param>
    /// <param name="asc">Additional sense code.</param>
    /// <param name="ascq">Its qualifier.</param>
    public void Fail(byte key, byte asc, byte ascq)
    {
        Status = ScsiStatus.CheckCondition;
        DataLength = 0;
        WriteSense(_sense, key, asc, ascq);
    }

    /// <summary>Sets the task's result to CHECK CONDITION with fixed-format sense.</summary>
    /// <param name="key">The sense key.</param>
    /// <param name="sense">Additional sense code and qualifier.</param>
    internal void Fail(byte key, Asc sense) => Fail(key, (byte)((ushort)sense >> 8), (byte)sense);

    /// <summary>Sets the task's result to CHECK CONDITION with fixed-format sense and a valid INFORMATION field.</summary>
    /// <param name="key">The sense key.</param>
    /// <param name="sense">Additional sense code and qualifier.</param>
    /// <param name="information">The INFORMATION field.</param>
    internal void Fail(byte key, Asc sense, uint information) => Fail(key, (byte)((ushort)sense >> 8), (byte)sense, information);

    // Fixed-format sense data (SPC-4 4.5.3): response code, VALID bit, additional sense length.
    internal const byte FixedCurrentSense = 0x70;
    internal const byte SenseValid = 0x80;
    internal const int FixedSenseLength = 18;

    /// <summary>Writes fixed-format sense data (SPC-4, 4.5.3) for a current error: 18 bytes.</summary>
    internal static void WriteSense(Span<byte> sense, byte key, byte asc, byte ascq)
    {
        sense[..FixedSenseLength].Clear();
        sense[0] = FixedCurrentSense; // current error, fixed format
        sense[2] = key;
        sense[7] = FixedSenseLength - 8; // additional sense length
        sense[12] = asc;
        sense[13] = ascq;
    }

    /// <summary>Writes fixed-format sense data (SPC-4, 4.5.3) for a current error: 18 bytes.</summary>
    internal static void WriteSense(Span<byte> sense, byte key, Asc asc) => WriteSense(sense, key, (byte)((ushort)asc >> 8), (byte)asc);

    /// <summary>
    /// Sets the task's result to CHECK CONDITION with fixed-format sense whose INFORMATION field is valid (for a
    /// miscompare: the offset of the first byte that differs).
    /// </summary>
    /// <param name="key">The sense key.</param>
    /// <param name="asc">Additional sense code.</param>
    /// <param name="ascq">Its qualifier.</param>
    /// <param name="information">The INFORMATION field.</param>
    public void Fail(byte key, byte asc, byte ascq, uint information)
    {
        Fail(key, asc, ascq);
        _sense[0] |= SenseValid;
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(_sense.AsSpan(3), information);
    }

    /// <summary>Sets the task's result to a status that carries no sense data (RESERVATION CONFLICT, BUSY).</summary>
    /// <param name="status">The status.</param>
    public void Refuse(byte status)
    {
        Status = status;
        DataLength = 0;
    }

    /// <summary>The unit's count of this write while it runs (see ScsiDisk.EnterWrite); -1 when none.</summary>
    internal int WriteToken { get; set; } = -1;

    /// <summary>True while this write holds the unit's atomic lock (it overlapped a COMPARE AND WRITE).</summary>
    internal bool AtomicHeld { get; set; }

    /// <summary>Prepares the task for another command.</summary>
    public void Reset()
    {
        WriteToken = -1;
        AtomicHeld = false;
        Cdb.AsSpan().Clear();
        ExpectedLength = 0;
        DataOut = false;
        Buffer = null;
        Status = ScsiStatus.Good;
        DataLength = 0;
    }
}
