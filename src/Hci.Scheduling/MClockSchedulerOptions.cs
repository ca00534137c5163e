namespace Hci.Scheduling;

/// <summary>Options of <see cref="MClockScheduler{T}"/>.</summary>
public sealed class MClockSchedulerOptions
{
    /// <summary>Reservation, weight and limit per tenant id. <remarks>Default: none.</remarks></summary>
    public Dictionary<int, MClockTenant> Tenants { get; } = new();

    /// <summary>Share of tenants not listed. <remarks>Default: no reservation, weight 1, no limit.</remarks></summary>
    public MClockTenant Default { get; set; } = new();

    /// <summary>Size of one cost unit: an I/O of n times this size costs n. <remarks>Default: 32 KiB.</remarks></summary>
    public int CostIoSize { get; set; } = 32 * 1024;

    /// <summary>Checks the options.</summary>
    /// <exception cref="ArgumentException">Says which value to fix.</exception>
    public void Validate()
    {
        if (CostIoSize <= 0)
        {
            throw new ArgumentException($"CostIoSize must be positive (was {CostIoSize}).");
        }

        Default.Validate();
        foreach (var t in Tenants.Values)
        {
            t.Validate();
        }
    }
}
