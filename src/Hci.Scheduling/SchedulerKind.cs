namespace Hci.Scheduling;

/// <summary>Which scheduler <see cref="ScheduledBlockDevice"/> runs.</summary>
public enum SchedulerKind
{
    /// <summary>First in, first out.</summary>
    Fifo = 0,

    /// <summary>Per-tenant IOPS and bandwidth limits with bursts.</summary>
    Limits,

    /// <summary>mClock: reservation, weight and limit per tenant.</summary>
    MClock,

    /// <summary>The paper's VM/container scheduler.</summary>
    Hybrid,
}
