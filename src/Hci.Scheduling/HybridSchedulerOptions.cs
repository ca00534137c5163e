namespace Hci.Scheduling;

/// <summary>Options of <see cref="HybridScheduler{T}"/>, the paper's VM/container scheduler.</summary>
public sealed class HybridSchedulerOptions
{
    /// <summary>Container I/Os outstanding (waiting or at the device) from which containers count as pressing. <remarks>Default: 1.</remarks></summary>
    public int ContainerPressureDepth { get; set; } = 1;

    /// <summary>
    /// How far the containers' mean latency may rise above its level with VMs held to their share (measured every
    /// half second) while VMs use the device slots containers leave idle; past it the VMs' use of idle slots halves.
    /// 0 keeps VMs to their share while containers press. A tolerance below the noise of the device's latency only
    /// makes the scheduler more careful: VMs then get less of the idle slots. <remarks>Default: 0.03 (3%).</remarks>
    /// </summary>
    public double ContainerLatencyTolerance { get; set; } = 0.03;

    /// <summary>
    /// Container latency (moving average) above which containers count as pressing even at a lower depth.
    /// <remarks>Default: 0 (not used).</remarks>
    /// </summary>
    public TimeSpan ContainerLatencyThreshold { get; set; }

    /// <summary>How long containers keep counting as pressing after their pressure ends. <remarks>Default: 2 ms.</remarks></summary>
    public TimeSpan PressureHold { get; set; } = TimeSpan.FromMilliseconds(2);

    /// <summary>I/Os per second every VM tenant gets while containers press: it never starves. <remarks>Default: 1000.</remarks></summary>
    public double VmFloorIops { get; set; } = 1000;

    /// <summary>
    /// Share of the device's measured completion rate that all VM tenants together get while containers press
    /// (split among the VMs with I/O waiting, each at least <see cref="VmFloorIops"/>). <remarks>Default: 0.02.</remarks>
    /// </summary>
    public double VmShareWhenPressed { get; set; } = 0.02;

    /// <summary>Longest a VM I/O may be held back; past it the I/O goes whatever containers do. <remarks>Default: 20 ms.</remarks></summary>
    public TimeSpan MaxAddedDelay { get; set; } = TimeSpan.FromMilliseconds(20);

    /// <summary>VM I/Os released together when a throttled VM may go: fewer, larger releases cost fewer notifications. <remarks>Default: 8.</remarks></summary>
    public int VmBatchSize { get; set; } = 8;

    /// <summary>
    /// Merge VM reads or writes that the scheduler releases one after another and that follow one another on the
    /// device into one request, up to the device's maximum transfer and segments. <remarks>Default: true.</remarks>
    /// </summary>
    public bool CoalesceVmIo { get; set; } = true;

    /// <summary>I/Os per second background work (rebuild, scrub) gets even when others keep the device busy. <remarks>Default: 200.</remarks></summary>
    public double BackgroundFloorIops { get; set; } = 200;

    /// <summary>Checks the options.</summary>
    /// <exception cref="ArgumentException">Says which value to fix.</exception>
    public void Validate()
    {
        if (ContainerPressureDepth < 1)
        {
            throw new ArgumentException($"ContainerPressureDepth must be at least 1 (was {ContainerPressureDepth}).");
        }

        if (ContainerLatencyTolerance < 0 || ContainerLatencyTolerance > 10 || double.IsNaN(ContainerLatencyTolerance))
        {
            throw new ArgumentException($"ContainerLatencyTolerance must be from 0 to 10 (was {ContainerLatencyTolerance}); 0.03 lets the containers' latency rise 3%.");
        }

        if (VmFloorIops <= 0 || double.IsNaN(VmFloorIops))
        {
            throw new ArgumentException($"VmFloorIops must be positive so that VMs never starve (was {VmFloorIops}).");
        }

        if (VmShareWhenPressed < 0 || VmShareWhenPressed > 1 || double.IsNaN(VmShareWhenPressed))
        {
            throw new ArgumentException($"VmShareWhenPressed must be from 0 to 1 (was {VmShareWhenPressed}).");
        }

        if (MaxAddedDelay <= TimeSpan.Zero)
        {
            throw new ArgumentException($"MaxAddedDelay must be positive (was {MaxAddedDelay}).");
        }

        if (VmBatchSize < 1)
        {
            throw new ArgumentException($"VmBatchSize must be at least 1 (was {VmBatchSize}).");
        }

        if (BackgroundFloorIops < 0 || PressureHold < TimeSpan.Zero || ContainerLatencyThreshold < TimeSpan.Zero)
        {
            throw new ArgumentException("BackgroundFloorIops, PressureHold and ContainerLatencyThreshold must not be negative.");
        }
    }
}
