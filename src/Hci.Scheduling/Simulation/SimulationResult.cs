namespace Hci.Scheduling.Simulation;

/// <summary>What one tenant got in a simulation, over the measured window.</summary>
internal sealed class TenantResult
{
    /// <summary>The tenant's name.</summary>
    public required string Name { get; init; }

    /// <summary>I/Os completed in the window.</summary>
    public long Completed { get; init; }

    /// <summary>I/Os per second.</summary>
    public double Iops { get; init; }

    /// <summary>Mean latency as the tenant sees it (virtualization included), in microseconds.</summary>
    public double MeanLatencyUs { get; init; }

    /// <summary>99th percentile latency, in microseconds.</summary>
    public double P99LatencyUs { get; init; }

    /// <summary>Longest time an I/O waited in the scheduler, in microseconds.</summary>
    public double MaxSchedulerDelayUs { get; init; }

    /// <summary>Mean time I/Os waited in the scheduler, in microseconds.</summary>
    public double MeanSchedulerDelayUs { get; init; }
}

/// <summary>The result of <see cref="SchedulerSimulator.Run"/>.</summary>
internal sealed class SimulationResult
{
    /// <summary>Per tenant, by name.</summary>
    public required IReadOnlyDictionary<string, TenantResult> Tenants { get; init; }

    /// <summary>All completions per second at the device.</summary>
    public double DeviceIops { get; init; }

    /// <summary>Indexer by tenant name.</summary>
    /// <param name="name">The tenant's name.</param>
    public TenantResult this[string name] => Tenants[name];
}
