namespace Hci.Core.Reactors;

/// <summary>What one look at a source of work found (SPDK's <c>SPDK_POLLER_BUSY</c> and <c>SPDK_POLLER_IDLE</c>).</summary>
public enum PollStatus
{
    /// <summary>Nothing to do: the reactor may start counting towards sleep.</summary>
    Idle = 0,

    /// <summary>Work was done: the reactor turns again at once.</summary>
    Busy = 1,
}
