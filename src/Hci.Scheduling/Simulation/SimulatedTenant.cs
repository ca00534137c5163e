using Hci.Core.Blocks;

namespace Hci.Scheduling.Simulation;

/// <summary>A load in <see cref="SchedulerSimulator"/>: closed loop at a queue depth, or open loop at a rate.</summary>
internal sealed class SimulatedTenant
{
    /// <summary>A name for the results.</summary>
    public required string Name { get; init; }

    /// <summary>The tenant id the scheduler sees.</summary>
    public required int Tenant { get; init; }

    /// <summary>VM, container or background.</summary>
    public IoClass Class { get; init; } = IoClass.Vm;

    /// <summary>Closed loop: I/Os kept outstanding. Ignored when <see cref="RateIops"/> is set.</summary>
    public int QueueDepth { get; init; } = 1;

    /// <summary>Open loop: I/Os issued per second whatever the completions; 0 for a closed loop.</summary>
    public double RateIops { get; init; }

    /// <summary>Bytes per I/O. <remarks>Default: 4096.</remarks></summary>
    public int IoSize { get; init; } = 4096;

    /// <summary>Share of reads. <remarks>Default: 1.</remarks></summary>
    public double ReadFraction { get; init; } = 1;

    /// <summary>
    /// I/O virtualization cost added on both sides of each I/O (before the controller sees it and after it
    /// completes). <remarks>Default: 17 us for a VM (the paper measured 16-18 us), none for a container or
    /// background work.</remarks>
    /// </summary>
    public TimeSpan? VirtualizationCost { get; init; }

    /// <summary>The virtualization cost in force: <see cref="VirtualizationCost"/>, or the class's default.</summary>
    public TimeSpan EffectiveVirtualizationCost => VirtualizationCost ?? (Class == IoClass.Vm ? TimeSpan.FromMicroseconds(17) : TimeSpan.Zero);

    /// <summary>When the tenant starts issuing. <remarks>Default: at once.</remarks></summary>
    public TimeSpan Start { get; init; }
}
