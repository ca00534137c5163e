namespace Hci.Scheduling;

/// <summary>Options of <see cref="LimitsScheduler{T}"/>.</summary>
public sealed class LimitsSchedulerOptions
{
    /// <summary>Limits per tenant id. <remarks>Default: none.</remarks></summary>
    public Dictionary<int, TenantLimits> Tenants { get; } = new();

    /// <summary>Limits of tenants not listed. <remarks>Default: unlimited.</remarks></summary>
    public TenantLimits Default { get; set; } = new();

    /// <summary>
    /// I/O size that counts as one I/O against IOPS limits: a larger I/O counts as several (as vSAN and QEMU's
    /// iops-size do), so that limits hold whatever the I/O size. <remarks>Default: 32 KiB; 0 counts every I/O as one.</remarks>
    /// </summary>
    public int NormalizedIoSize { get; set; } = 32 * 1024;

    /// <summary>Checks the options.</summary>
    /// <exception cref="ArgumentException">Says which value to fix.</exception>
    public void Validate()
    {
        if (NormalizedIoSize < 0)
        {
            throw new ArgumentException($"NormalizedIoSize must be zero or more (was {NormalizedIoSize}).");
        }

        Default.Validate();
        foreach (var limits in Tenants.Values)
        {
            limits.Validate();
        }
    }
}
