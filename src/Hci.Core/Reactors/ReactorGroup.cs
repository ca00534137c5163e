namespace Hci.Core.Reactors;

/// <summary>
/// Reactors shared by many connections or rings, so that hundreds of sessions run on a fixed number of threads
/// (Kestrel shares <c>min(processors, 16)</c> I/O queues among all its connections). New work is placed on the least
/// loaded reactor.
/// </summary>
public sealed class ReactorGroup : IDisposable
{
    private readonly Reactor[] _reactors;

    /// <summary>Starts the group's reactors.</summary>
    /// <param name="options">Options; null for the defaults.</param>
    /// <exception cref="ArgumentException">The options are out of range.</exception>
    public ReactorGroup(ReactorGroupOptions? options = null)
    {
        options ??= new ReactorGroupOptions();
        options.Validate();
        _reactors = new Reactor[options.Count];
        try
        {
            for (int i = 0; i < _reactors.Length; i++)
            {
                _reactors[i] = new Reactor(new ReactorOptions
                {
                    Name = $"{options.Name}-{i}",
                    PollWindow = options.PollWindow,
                    TimeProvider = options.TimeProvider,
                });
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>The group's reactors.</summary>
    public IReadOnlyList<Reactor> Reactors => _reactors;

    /// <summary>The least loaded reactor (see <see cref="Reactor.Load"/>); it is not reserved, see <see cref="Assign"/>.</summary>
    /// <returns>The reactor.</returns>
    public Reactor PickLeastLoaded()
    {
        Reactor best = _reactors[0];
        int load = best.Load;
        for (int i = 1; i < _reactors.Length; i++)
        {
            int l = _reactors[i].Load;
            if (l < load)
            {
                best = _reactors[i];
                load = l;
            }
        }

        return best;
    }

    /// <summary>
    /// Places one unit of work (a connection, a ring) on the least loaded reactor and counts it there at once, so that
    /// placements made together from other threads spread out; dispose the assignment when the work ends.
    /// </summary>
    /// <returns>The assignment.</returns>
    public ReactorAssignment Assign()
    {
        lock (_reactors)
        {
            var reactor = PickLeastLoaded();
            reactor.Assign(1);
            return new ReactorAssignment(reactor);
        }
    }

    /// <summary>Stops every reactor (each once its I/O in flight has completed) and waits for them.</summary>
    public void Dispose()
    {
        foreach (var reactor in _reactors)
        {
            reactor?.Dispose();
        }
    }
}

/// <summary>A unit of work placed on a reactor by <see cref="ReactorGroup.Assign"/>; disposing it takes it off the reactor's load.</summary>
public sealed class ReactorAssignment : IDisposable
{
    private int _released;

    internal ReactorAssignment(Reactor reactor)
    {
        Reactor = reactor;
    }

    /// <summary>The reactor the work runs on.</summary>
    public Reactor Reactor { get; }

    /// <summary>Takes the work off the reactor's load (once).</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _released, 1) == 0)
        {
            Reactor.Assign(-1);
        }
    }
}
