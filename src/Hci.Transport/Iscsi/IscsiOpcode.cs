namespace Hci.Transport.Iscsi;

/// <summary>iSCSI PDU opcodes (RFC 7143, 11.1.1): initiator opcodes below 0x20, target opcodes from 0x20.</summary>
internal enum IscsiOpcode : byte
{
    /// <summary>NOP-Out (initiator ping, or answer to a NOP-In).</summary>
    NopOut = 0x00,

    /// <summary>SCSI Command.</summary>
    ScsiCommand = 0x01,

    /// <summary>SCSI Task Management Function Request.</summary>
    TaskManagementRequest = 0x02,

    /// <summary>Login Request.</summary>
    LoginRequest = 0x03,

    /// <summary>Text Request.</summary>
    TextRequest = 0x04,

    /// <summary>SCSI Data-Out (write data).</summary>
    DataOut = 0x05,

    /// <summary>Logout Request.</summary>
    LogoutRequest = 0x06,

    /// <summary>SNACK Request (only at ErrorRecoveryLevel above 0).</summary>
    SnackRequest = 0x10,

    /// <summary>NOP-In.</summary>
    NopIn = 0x20,

    /// <summary>SCSI Response.</summary>
    ScsiResponse = 0x21,

    /// <summary>SCSI Task Management Function Response.</summary>
    TaskManagementResponse = 0x22,

    /// <summary>Login Response.</summary>
    LoginResponse = 0x23,

    /// <summary>Text Response.</summary>
    TextResponse = 0x24,

    /// <summary>SCSI Data-In (read data).</summary>
    DataIn = 0x25,

    /// <summary>Logout Response.</summary>
    LogoutResponse = 0x26,

    /// <summary>Ready To Transfer.</summary>
    ReadyToTransfer = 0x31,

    /// <summary>Asynchronous Message.</summary>
    AsyncMessage = 0x32,

    /// <summary>Reject.</summary>
    Reject = 0x3f,
}
