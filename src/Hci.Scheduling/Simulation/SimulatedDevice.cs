namespace Hci.Scheduling.Simulation;

/// <summary>
/// A device model for <see cref="SchedulerSimulator"/>: a number of channels working in parallel, each I/O
/// occupying one for its service time. Defaults follow the paper's SSD (Intel P3700): 4 KiB read about 99 us,
/// write about 20 us, about 460K read IOPS.
/// </summary>
internal sealed class SimulatedDevice
{
    /// <summary>I/Os the device works on at once. <remarks>Default: 46 (460K IOPS at 99 us).</remarks></summary>
    public int Channels { get; set; } = 46;

    /// <summary>Service time of a 4 KiB read. <remarks>Default: 99 us.</remarks></summary>
    public TimeSpan ReadTime { get; set; } = TimeSpan.FromMicroseconds(99);

    /// <summary>Service time of a 4 KiB write. <remarks>Default: 20 us.</remarks></summary>
    public TimeSpan WriteTime { get; set; } = TimeSpan.FromMicroseconds(20);

    /// <summary>Transfer rate for bytes beyond the first 4 KiB of an I/O. <remarks>Default: 2.8 GB/s.</remarks></summary>
    public double BytesPerSecond { get; set; } = 2.8e9;

    /// <summary>
    /// Spread of service times: each I/O takes its time times a factor drawn evenly from 1 - spread to 1 + spread
    /// (deterministic, seeded), so that channels do not move in lockstep as no real device does. <remarks>Default: 0.1.</remarks>
    /// </summary>
    public double ServiceSpread { get; set; } = 0.1;

    internal long ServiceNs(bool read, long bytes, double uniform)
    {
        double ns = (read ? ReadTime : WriteTime).TotalNanoseconds * (1 + (ServiceSpread * ((2 * uniform) - 1)));
        if (bytes > 4096)
        {
            ns += (bytes - 4096) / BytesPerSecond * 1e9;
        }

        return (long)ns;
    }
}
