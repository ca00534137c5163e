namespace Hci.Hosting;

/// <summary>Where the host's Hci devices and servers are in their life.</summary>
public enum HciRuntimeState
{
    /// <summary>The host has not started them yet.</summary>
    NotStarted = 0,

    /// <summary>Devices are opening and servers starting.</summary>
    Starting,

    /// <summary>Every device is open and every server listens.</summary>
    Running,

    /// <summary>The host is stopping them.</summary>
    Stopping,

    /// <summary>Every server is stopped and every device closed.</summary>
    Stopped,

    /// <summary>Start failed (see <see cref="HciRuntime.FailureReason"/>); what had started is stopped again.</summary>
    Failed,
}
