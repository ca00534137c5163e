namespace Hci.Scheduling;

/// <summary>Which scheduler to put in front of a device, and its settings (bind from configuration, validate at start-up).</summary>
public sealed class SchedulerOptions
{
    /// <summary>The scheduler. <remarks>Default: <see cref="SchedulerKind.Fifo"/>.</remarks></summary>
    public SchedulerKind Kind { get; set; } = SchedulerKind.Fifo;

    /// <summary>Settings of <see cref="SchedulerKind.Limits"/>.</summary>
    public LimitsSchedulerOptions Limits { get; set; } = new();

    /// <summary>Settings of <see cref="SchedulerKind.MClock"/>.</summary>
    public MClockSchedulerOptions MClock { get; set; } = new();

    /// <summary>Settings of <see cref="SchedulerKind.Hybrid"/>.</summary>
    public HybridSchedulerOptions Hybrid { get; set; } = new();

    /// <summary>Checks the settings of the chosen scheduler.</summary>
    /// <exception cref="ArgumentException">Says what to fix.</exception>
    public void Validate()
    {
        switch (Kind)
        {
            case SchedulerKind.Fifo:
                break;
            case SchedulerKind.Limits:
                Limits.Validate();
                break;
            case SchedulerKind.MClock:
                MClock.Validate();
                break;
            case SchedulerKind.Hybrid:
                Hybrid.Validate();
                break;
            default:
                throw new ArgumentException($"Unknown scheduler {Kind}: use fifo, limits, mclock or hybrid.");
        }
    }

    /// <summary>Makes a fresh scheduler of the chosen kind.</summary>
    /// <typeparam name="T">The handle type.</typeparam>
    /// <returns>The scheduler.</returns>
    public IoScheduler<T> Create<T>()
        where T : class
    {
        Validate();
        return Kind switch
        {
            SchedulerKind.Limits => new LimitsScheduler<T>(Limits),
            SchedulerKind.MClock => new MClockScheduler<T>(MClock),
            SchedulerKind.Hybrid => new HybridScheduler<T>(Hybrid),
            _ => new FifoScheduler<T>(),
        };
    }
}
