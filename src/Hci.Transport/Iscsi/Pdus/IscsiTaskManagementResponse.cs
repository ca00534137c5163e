namespace Hci.Transport.Iscsi;

/// <summary>Outcomes of a task management function (RFC 7143, 11.6.1).</summary>
internal enum IscsiTaskManagementResponse : byte
{
    /// <summary>Function complete.</summary>
    Complete = 0,

    /// <summary>The task does not exist (an ABORT TASK for a task already answered).</summary>
    TaskDoesNotExist = 1,

    /// <summary>The LUN does not exist.</summary>
    LunDoesNotExist = 2,

    /// <summary>The task is still allegiant.</summary>
    TaskStillAllegiant = 3,

    /// <summary>Task allegiance reassignment not supported.</summary>
    ReassignmentNotSupported = 4,

    /// <summary>The function is not supported.</summary>
    NotSupported = 5,

    /// <summary>Function authorization failed.</summary>
    AuthorizationFailed = 6,

    /// <summary>Function rejected.</summary>
    Rejected = 255,
}
