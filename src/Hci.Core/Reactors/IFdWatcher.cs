namespace Hci.Core.Reactors;

/// <summary>Told on the reactor's thread when a descriptor it watches is ready (see <see cref="Reactor.Watch"/>).</summary>
public interface IFdWatcher
{
    /// <summary>
    /// The descriptor is ready. Watches are level-triggered: what is not read now is reported again on the next
    /// turn. An exception that escapes ends the process; a connection handles its own errors.
    /// </summary>
    /// <param name="events">What is ready.</param>
    void OnReady(FdEvents events);
}
