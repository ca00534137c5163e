using System.Runtime.InteropServices;

namespace Hci.Core.Reactors;

/// <summary>
/// A descriptor in a reactor's epoll set (from <see cref="Reactor.Watch"/>). It holds a reference on the handle, so
/// the descriptor number cannot be closed and reused while it is watched. Use it on the reactor's thread only.
/// </summary>
public sealed class FdWatch : IDisposable
{
    private readonly Reactor _reactor;
    private bool _disposed;

    internal FdWatch(Reactor reactor, SafeHandle handle, int fd, FdEvents events, IFdWatcher watcher, bool pollWhileBusy, int id, uint generation)
    {
        _reactor = reactor;
        Handle = handle;
        Fd = fd;
        Events = events;
        Watcher = watcher;
        PollWhileBusy = pollWhileBusy;
        Id = id;
        Generation = generation;
    }

    /// <summary>The events watched now.</summary>
    public FdEvents Events { get; private set; }

    /// <summary>True when the descriptor is looked at on every busy turn too, not only when the reactor sleeps.</summary>
    public bool PollWhileBusy { get; }

    internal SafeHandle Handle { get; }

    internal int Fd { get; }

    internal IFdWatcher Watcher { get; }

    internal int Id { get; }

    internal uint Generation { get; }

    /// <summary>Changes the events watched (to add <see cref="FdEvents.Writable"/> while output waits for room, say).</summary>
    /// <param name="events">The events.</param>
    public void Modify(FdEvents events)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (events == Events)
        {
            return;
        }

        _reactor.ModifyWatch(this, events);
        Events = events;
    }

    /// <summary>Takes the descriptor out of the set; the caller still owns and closes it.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _reactor.RemoveWatch(this);
    }
}
