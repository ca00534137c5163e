namespace Hci.Core.Reactors;

/// <summary>
/// Work a <see cref="Reactor"/> looks at on every turn, on its thread: a virtqueue set, an inbox of requests, a
/// load generator. Register it with <see cref="Reactor.AddPoller"/>.
/// </summary>
/// <remarks>
/// An exception that escapes <see cref="Poll"/> or <see cref="PrepareToSleep"/> ends the process
/// (<see cref="Environment.FailFast(string)"/>): a poller handles the errors of the work it owns (answers a
/// request with an error, drops a connection) and lets only bugs escape.
/// </remarks>
public interface IPoller
{
    /// <summary>Does what is ready now, without blocking.</summary>
    /// <returns><see cref="PollStatus.Busy"/> when anything was done.</returns>
    PollStatus Poll();

    /// <summary>
    /// Called when the reactor is about to sleep (its poll window passed with no work): turn notifications back
    /// on (a virtqueue's kicks), then look once more, so that work that arrived meanwhile is not slept through.
    /// </summary>
    /// <param name="maxSleepMilliseconds">The longest sleep so far (-1 for none); lower it to be looked at again
    /// within that time (a throttled tenant's next turn).</param>
    /// <returns><see cref="PollStatus.Busy"/> when work was found: the reactor then does not sleep.</returns>
    PollStatus PrepareToSleep(ref int maxSleepMilliseconds) => PollStatus.Idle;
}
