namespace Hci.Core.Reactors;

/// <summary>
/// A one-shot timer that fires on its reactor's thread (from <see cref="Reactor.CreateTimer"/>): NOP-In pings,
/// login deadlines, a throttle's next look. Schedule and cancel it on the reactor's thread; it allocates nothing
/// once made.
/// </summary>
public sealed class ReactorTimer
{
    private readonly Reactor _reactor;

    internal ReactorTimer(Reactor reactor, Action callback)
    {
        _reactor = reactor;
        Callback = callback;
    }

    /// <summary>True while scheduled and not yet fired.</summary>
    public bool IsScheduled => Due != long.MaxValue;

    internal Action Callback { get; }

    /// <summary>The reactor clock's timestamp it fires at; <see cref="long.MaxValue"/> when not scheduled.</summary>
    internal long Due { get; set; } = long.MaxValue;

    internal int Index { get; set; } = -1;

    /// <summary>Fires once after <paramref name="due"/> (again scheduling moves it).</summary>
    /// <param name="due">From now; zero or less fires on the next turn.</param>
    public void Schedule(TimeSpan due) => _reactor.ScheduleTimer(this, due);

    /// <summary>Stops it from firing (nothing happens when it is not scheduled).</summary>
    public void Cancel() => _reactor.CancelTimer(this);
}
