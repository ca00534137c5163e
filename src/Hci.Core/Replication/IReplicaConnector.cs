using Hci.Core.Reactors;

namespace Hci.Core.Replication;

/// <summary>Opens channels to nodes' replica stores: the node-to-node protocol's client implements it for remote
/// nodes, and <c>ReplicaNode</c> for the local one.</summary>
public interface IReplicaConnector
{
    /// <summary>Opens a channel to <paramref name="nodeId"/> for the calling thread.</summary>
    /// <param name="nodeId">The node, as in the cluster map.</param>
    /// <param name="reactor">The reactor whose thread will own the channel (the channel watches its socket there), or
    /// null for a thread that polls the channel itself.</param>
    /// <returns>The channel; it connects in the background and answers <see cref="ReplicaStatus.Unavailable"/> until
    /// it is connected.</returns>
    ReplicaChannel Open(string nodeId, Reactor? reactor);
}
