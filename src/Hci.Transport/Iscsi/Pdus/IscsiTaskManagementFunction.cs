namespace Hci.Transport.Iscsi;

/// <summary>Task management functions (RFC 7143, 11.5.1).</summary>
internal enum IscsiTaskManagementFunction : byte
{
    /// <summary>ABORT TASK: the task named by the referenced task tag.</summary>
    AbortTask = 1,

    /// <summary>ABORT TASK SET: this session's tasks on the LUN.</summary>
    AbortTaskSet = 2,

    /// <summary>CLEAR ACA.</summary>
    ClearAca = 4,

    /// <summary>CLEAR TASK SET: this session's tasks on the LUN (there is one task set per session).</summary>
    ClearTaskSet = 3,

    /// <summary>LOGICAL UNIT RESET.</summary>
    LogicalUnitReset = 5,

    /// <summary>TARGET WARM RESET.</summary>
    TargetWarmReset = 6,

    /// <summary>TARGET COLD RESET.</summary>
    TargetColdReset = 7,

    /// <summary>TASK REASSIGN (ErrorRecoveryLevel 2).</summary>
    TaskReassign = 8,
}
