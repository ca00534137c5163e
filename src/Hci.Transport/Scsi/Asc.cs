namespace Hci.Transport.Scsi;

/// <summary>
/// Additional sense code and qualifier pairs (SPC-4 annex D) this unit reports, named once: the code in the high
/// byte, the qualifier in the low byte (as libiscsi and sg3_utils print them, 2100h for LBA OUT OF RANGE).
/// </summary>
internal enum Asc : ushort
{
    /// <summary>NO ADDITIONAL SENSE INFORMATION.</summary>
    None = 0x0000,

    /// <summary>WRITE ERROR (medium error on a write).</summary>
    WriteError = 0x0C00,

    /// <summary>UNRECOVERED READ ERROR.</summary>
    UnrecoveredReadError = 0x1100,

    /// <summary>PARAMETER LIST LENGTH ERROR.</summary>
    ParameterListLengthError = 0x1A00,

    /// <summary>MISCOMPARE DURING VERIFY OPERATION.</summary>
    MiscompareDuringVerify = 0x1D00,

    /// <summary>INVALID COMMAND OPERATION CODE.</summary>
    InvalidCommandOperationCode = 0x2000,

    /// <summary>LOGICAL BLOCK ADDRESS OUT OF RANGE.</summary>
    LbaOutOfRange = 0x2100,

    /// <summary>INVALID FIELD IN CDB.</summary>
    InvalidFieldInCdb = 0x2400,

    /// <summary>LOGICAL UNIT NOT SUPPORTED.</summary>
    LogicalUnitNotSupported = 0x2500,

    /// <summary>INVALID FIELD IN PARAMETER LIST.</summary>
    InvalidFieldInParameterList = 0x2600,

    /// <summary>INVALID RELEASE OF PERSISTENT RESERVATION.</summary>
    InvalidReleaseOfPersistentReservation = 0x2604,

    /// <summary>WRITE PROTECTED.</summary>
    WriteProtected = 0x2700,

    /// <summary>SPACE ALLOCATION FAILED WRITE PROTECT (a thin unit ran out of space).</summary>
    SpaceAllocationFailedWriteProtect = 0x2707,

    /// <summary>BUS DEVICE RESET FUNCTION OCCURRED (a logical unit reset; a unit attention).</summary>
    BusDeviceResetOccurred = 0x2903,

    /// <summary>RESERVATIONS PREEMPTED (a unit attention).</summary>
    ReservationsPreempted = 0x2A03,

    /// <summary>RESERVATIONS RELEASED (a unit attention).</summary>
    ReservationsReleased = 0x2A04,

    /// <summary>REGISTRATIONS PREEMPTED (a unit attention).</summary>
    RegistrationsPreempted = 0x2A05,

    /// <summary>SAVING PARAMETERS NOT SUPPORTED.</summary>
    SavingParametersNotSupported = 0x3900,

    /// <summary>INTERNAL TARGET FAILURE.</summary>
    InternalTargetFailure = 0x4400,

    /// <summary>DATA PHASE ERROR.</summary>
    DataPhaseError = 0x4B00,
}
