namespace Hci.Scheduling;

/// <summary>Limits of one tenant for <see cref="LimitsScheduler{T}"/>; 0 means unlimited.</summary>
public sealed class TenantLimits
{
    /// <summary>Sustained I/Os per second, counted in normalized I/Os. <remarks>Default: 0 (unlimited).</remarks></summary>
    public double Iops { get; set; }

    /// <summary>Sustained bytes per second. <remarks>Default: 0 (unlimited).</remarks></summary>
    public double BytesPerSecond { get; set; }

    /// <summary>I/Os that may go at once above the rate after a quiet spell. <remarks>Default: 0, meaning one tenth of a second at <see cref="Iops"/>.</remarks></summary>
    public double IopsBurst { get; set; }

    /// <summary>Bytes that may go at once above the rate. <remarks>Default: 0, meaning one tenth of a second at <see cref="BytesPerSecond"/>.</remarks></summary>
    public double BytesBurst { get; set; }

    /// <summary>Checks the values.</summary>
    /// <exception cref="ArgumentException">A value is negative or not a number.</exception>
    public void Validate()
    {
        foreach (var (name, v) in new[] { (nameof(Iops), Iops), (nameof(BytesPerSecond), BytesPerSecond), (nameof(IopsBurst), IopsBurst), (nameof(BytesBurst), BytesBurst) })
        {
            if (v < 0 || double.IsNaN(v) || double.IsInfinity(v))
            {
                throw new ArgumentException($"Tenant limit {name} must be a finite number of zero or more (was {v}).");
            }
        }
    }
}
