namespace Hci.Transport.Iscsi;

/// <summary>Why a PDU was rejected: the Reject PDU's reason code (RFC 7143, 11.17.1).</summary>
internal enum IscsiRejectReason : byte
{
    /// <summary>A data digest error: the PDU is discarded, and the initiator may resend.</summary>
    DataDigestError = 0x02,

    /// <summary>A SNACK that cannot be served.</summary>
    SnackReject = 0x03,

    /// <summary>A protocol error, such as a task tag already in use or malformed text.</summary>
    ProtocolError = 0x04,

    /// <summary>A PDU this target does not support, or one not allowed in this session (discovery).</summary>
    CommandNotSupported = 0x05,

    /// <summary>An immediate command refused for lack of resources.</summary>
    ImmediateCommandReject = 0x06,

    /// <summary>A task still in progress.</summary>
    TaskInProgress = 0x07,

    /// <summary>An invalid data acknowledgement.</summary>
    InvalidDataAck = 0x08,

    /// <summary>A field out of range, such as a Data-Out for no task that takes data, or past its buffer.</summary>
    InvalidPduField = 0x09,

    /// <summary>A long operation rejected.</summary>
    LongOperationReject = 0x0A,

    /// <summary>A renegotiation the target refuses to reset.</summary>
    NegotiationReset = 0x0B,

    /// <summary>The target waits for the initiator to log out.</summary>
    WaitingForLogout = 0x0C,
}
