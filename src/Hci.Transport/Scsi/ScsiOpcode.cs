namespace Hci.Transport.Scsi;

/// <summary>
/// Operation codes (SPC-4 and SBC-3) of the commands this unit knows, named once; the CDB's first byte. Service
/// actions of the opcodes that have them are in <see cref="ScsiServiceAction"/>.
/// </summary>
internal static class ScsiOpcode
{
    public const byte TestUnitReady = 0x00;
    public const byte RequestSense = 0x03;
    public const byte Read6 = 0x08;
    public const byte Write6 = 0x0A;
    public const byte Inquiry = 0x12;
    public const byte ModeSelect6 = 0x15;
    public const byte Reserve6 = 0x16;
    public const byte Release6 = 0x17;
    public const byte ModeSense6 = 0x1A;
    public const byte StartStopUnit = 0x1B;
    public const byte PreventAllowMediumRemoval = 0x1E;
    public const byte ReadCapacity10 = 0x25;
    public const byte Read10 = 0x28;
    public const byte Write10 = 0x2A;
    public const byte WriteAndVerify10 = 0x2E;
    public const byte Verify10 = 0x2F;
    public const byte PreFetch10 = 0x34;
    public const byte SynchronizeCache10 = 0x35;
    public const byte ReadDefectData10 = 0x37;
    public const byte WriteSame10 = 0x41;
    public const byte Unmap = 0x42;
    public const byte LogSense = 0x4D;
    public const byte ModeSelect10 = 0x55;
    public const byte Reserve10 = 0x56;
    public const byte Release10 = 0x57;
    public const byte ModeSense10 = 0x5A;
    public const byte PersistentReserveIn = 0x5E;
    public const byte PersistentReserveOut = 0x5F;
    public const byte Read16 = 0x88;
    public const byte CompareAndWrite = 0x89;
    public const byte Write16 = 0x8A;
    public const byte OrWrite16 = 0x8B;
    public const byte WriteAndVerify16 = 0x8E;
    public const byte Verify16 = 0x8F;
    public const byte PreFetch16 = 0x90;
    public const byte SynchronizeCache16 = 0x91;
    public const byte WriteSame16 = 0x93;

    /// <summary>WRITE ATOMIC (16) (SBC-4 5.48).</summary>
    public const byte WriteAtomic16 = 0x9C;

    /// <summary>SERVICE ACTION IN (16): READ CAPACITY (16), GET LBA STATUS.</summary>
    public const byte ServiceActionIn16 = 0x9E;
    public const byte ReportLuns = 0xA0;

    /// <summary>MAINTENANCE IN: REPORT SUPPORTED OPERATION CODES.</summary>
    public const byte MaintenanceIn = 0xA3;
    public const byte Read12 = 0xA8;
    public const byte Write12 = 0xAA;
    public const byte WriteAndVerify12 = 0xAE;
    public const byte Verify12 = 0xAF;
    public const byte ReadDefectData12 = 0xB7;
}

/// <summary>Service actions (CDB byte 1, bits 4-0) of the opcodes that have them.</summary>
internal static class ScsiServiceAction
{
    /// <summary>The service action field's mask in CDB byte 1.</summary>
    public const byte Mask = 0x1F;

    /// <summary>SERVICE ACTION IN (16): READ CAPACITY (16).</summary>
    public const byte ReadCapacity16 = 0x10;

    /// <summary>SERVICE ACTION IN (16): GET LBA STATUS.</summary>
    public const byte GetLbaStatus = 0x12;

    /// <summary>MAINTENANCE IN: REPORT SUPPORTED OPERATION CODES.</summary>
    public const byte ReportSupportedOperationCodes = 0x0C;

    /// <summary>PERSISTENT RESERVE IN: READ KEYS.</summary>
    public const byte ReadKeys = 0x00;

    /// <summary>PERSISTENT RESERVE IN: READ RESERVATION.</summary>
    public const byte ReadReservation = 0x01;

    /// <summary>PERSISTENT RESERVE IN: REPORT CAPABILITIES.</summary>
    public const byte ReportCapabilities = 0x02;

    /// <summary>PERSISTENT RESERVE IN: READ FULL STATUS.</summary>
    public const byte ReadFullStatus = 0x03;

    /// <summary>PERSISTENT RESERVE OUT: REGISTER.</summary>
    public const byte Register = 0x00;

    /// <summary>PERSISTENT RESERVE OUT: RESERVE.</summary>
    public const byte Reserve = 0x01;

    /// <summary>PERSISTENT RESERVE OUT: RELEASE.</summary>
    public const byte Release = 0x02;

    /// <summary>PERSISTENT RESERVE OUT: CLEAR.</summary>
    public const byte Clear = 0x03;

    /// <summary>PERSISTENT RESERVE OUT: PREEMPT.</summary>
    public const byte Preempt = 0x04;

    /// <summary>PERSISTENT RESERVE OUT: PREEMPT AND ABORT.</summary>
    public const byte PreemptAndAbort = 0x05;

    /// <summary>PERSISTENT RESERVE OUT: REGISTER AND IGNORE EXISTING KEY.</summary>
    public const byte RegisterAndIgnoreExistingKey = 0x06;
}

/// <summary>Vital product data pages (SPC-4 7.8, SBC-3 6.5) this unit has.</summary>
internal static class VpdPage
{
    public const byte SupportedPages = 0x00;
    public const byte UnitSerialNumber = 0x80;
    public const byte DeviceIdentification = 0x83;
    public const byte BlockLimits = 0xB0;
    public const byte BlockDeviceCharacteristics = 0xB1;
    public const byte LogicalBlockProvisioning = 0xB2;
}

/// <summary>Mode pages (SPC-4 7.5, SBC-3 6.4) this unit has, and the page code for all of them.</summary>
internal static class ModePage
{
    public const byte Caching = 0x08;
    public const byte Control = 0x0A;
    public const byte InformationalExceptionsControl = 0x1C;
    public const byte AllPages = 0x3F;

    /// <summary>The page code's mask in a page's byte 0 (and in MODE SENSE's CDB byte 2).</summary>
    public const byte CodeMask = 0x3F;

    /// <summary>SPF: the page is in the sub-page format.</summary>
    public const byte SubPageFormat = 0x40;

    /// <summary>PS: parameters saveable (reserved in MODE SELECT).</summary>
    public const byte ParametersSaveable = 0x80;

    /// <summary>WCE, in byte 2 of the caching page.</summary>
    public const byte WriteCacheEnable = 0x04;
}

/// <summary>Bits of CDB byte 1 that the block commands share (SBC-3).</summary>
internal static class CdbFlags
{
    /// <summary>RDPROTECT, WRPROTECT or VRPROTECT (bits 7-5).</summary>
    public const byte Protect = 0xE0;

    /// <summary>FUA (READ, WRITE, COMPARE AND WRITE, ORWRITE).</summary>
    public const byte ForceUnitAccess = 0x08;

    /// <summary>UNMAP (WRITE SAME).</summary>
    public const byte Unmap = 0x08;

    /// <summary>ANCHOR (WRITE SAME).</summary>
    public const byte Anchor = 0x10;

    /// <summary>NDOB (WRITE SAME 16).</summary>
    public const byte NoDataOutBuffer = 0x01;

    /// <summary>EVPD (INQUIRY).</summary>
    public const byte EnableVpd = 0x01;
}
