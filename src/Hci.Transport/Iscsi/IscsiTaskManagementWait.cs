namespace Hci.Transport.Iscsi;

/// <summary>A task management function waiting for the tasks it aborted to finish before it is answered.</summary>
/// <param name="itt">The function's own task tag.</param>
internal sealed class IscsiTaskManagementWait(uint itt)
{
    /// <summary>The function's own task tag.</summary>
    public uint Itt { get; } = itt;

    /// <summary>The answer, once no task is pending.</summary>
    public IscsiTaskManagementResponse Response { get; set; }

    /// <summary>Aborted tasks still running.</summary>
    public int Pending { get; set; }
}
