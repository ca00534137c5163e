using Hci.Core.Reactors;

namespace Hci.Core.Replication;

/// <summary>
/// The way to the replica stores of one node, owned by one thread: the local node's stores in process
/// (<c>LocalReplicaChannel</c>, no network), or a remote node's over the node-to-node protocol (Hci.Transport).
/// Many requests may be in flight; answers come back in any order.
/// </summary>
/// <remarks>
/// A channel belongs to the thread that made it (a reactor's, normally). Submit never calls a completion handler and
/// never blocks; handlers run from <see cref="Poll"/>, or from the reactor the channel was opened on. A channel that
/// loses its peer answers what it had in flight, and what is submitted until it is back, with
/// <see cref="ReplicaStatus.Unavailable"/>; it reconnects by itself.
/// </remarks>
public abstract class ReplicaChannel : IDisposable
{
    /// <summary>The node this channel reaches.</summary>
    public abstract string NodeId { get; }

    /// <summary>True while requests can reach the node (connected and authenticated, for a remote one).</summary>
    public abstract bool IsConnected { get; }

    /// <summary>Requests submitted and not answered yet.</summary>
    public abstract int InFlight { get; }

    /// <summary>Sends a request; its handler is called once with the answer.</summary>
    /// <param name="request">The request, with <see cref="ReplicaRequest.Handler"/> set; it must not be in flight.</param>
    public abstract void Submit(ReplicaRequest request);

    /// <summary>Delivers the answers that arrived, without blocking.</summary>
    /// <returns>How many requests were answered.</returns>
    public abstract int Poll();

    /// <summary>
    /// Like <see cref="Poll"/>, for a caller that holds the channel's reactor thread while it waits for answers (a
    /// blocking poll of a queue on that reactor): also looks for answers the reactor would otherwise report. A remote
    /// channel on a reactor reads its socket only when the reactor's watch says it is readable; here it reads anyway.
    /// </summary>
    /// <returns>How many requests were answered.</returns>
    public virtual int PollInWait() => Poll();

    /// <summary>Answers every request in flight with <see cref="ReplicaStatus.Unavailable"/> (if any) and closes.</summary>
    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Releases the channel.</summary>
    /// <param name="disposing">True from <see cref="Dispose()"/>.</param>
    protected abstract void Dispose(bool disposing);
}
