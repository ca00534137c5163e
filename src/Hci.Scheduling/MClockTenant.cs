namespace Hci.Scheduling;

/// <summary>One tenant's share for <see cref="MClockScheduler{T}"/>, in cost units per second (a small I/O costs 1).</summary>
public sealed class MClockTenant
{
    /// <summary>Guaranteed I/Os per second, served first. <remarks>Default: 0 (none).</remarks></summary>
    public double Reservation { get; set; }

    /// <summary>Share of what is left after reservations, relative to other tenants. <remarks>Default: 1.</remarks></summary>
    public double Weight { get; set; } = 1;

    /// <summary>Most I/Os per second. <remarks>Default: 0 (unlimited).</remarks></summary>
    public double Limit { get; set; }

    /// <summary>Checks the values.</summary>
    /// <exception cref="ArgumentException">Says which value to fix.</exception>
    public void Validate()
    {
        if (Reservation < 0 || Limit < 0 || double.IsNaN(Reservation) || double.IsNaN(Limit))
        {
            throw new ArgumentException("mClock reservation and limit must be zero or more.");
        }

        if (Weight <= 0 || double.IsNaN(Weight) || double.IsInfinity(Weight))
        {
            throw new ArgumentException($"mClock weight must be positive (was {Weight}).");
        }

        if (Limit > 0 && Reservation > Limit)
        {
            throw new ArgumentException($"mClock reservation ({Reservation}) cannot exceed the limit ({Limit}).");
        }
    }
}
