using Hci.Core.Cluster;

namespace Hci.Core.Replication;

/// <summary>
/// What a <see cref="ReplicatedVolume"/> asks of the cluster store (control plane, never per I/O in steady state):
/// a replica set for an extent's first write, and replica state changes, each made durable before it returns.
/// </summary>
public interface IVolumeControl
{
    /// <summary>Records the extent as allocated with a replica set chosen by placement (or returns the set another
    /// writer recorded first).</summary>
    /// <param name="extent">The extent's index.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The extent's replicas.</returns>
    ValueTask<IReadOnlyList<ReplicaTarget>> AllocateExtentAsync(long extent, CancellationToken cancellationToken);

    /// <summary>
    /// Changes one replica's state in the store, in one transaction that also advances the volume's state version.
    /// </summary>
    /// <param name="extent">The extent's index.</param>
    /// <param name="replica">The replica's index in the extent's set.</param>
    /// <param name="state">The new state.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The volume's state version after the change.</returns>
    ValueTask<ulong> SetReplicaStateAsync(long extent, int replica, ReplicaState state, CancellationToken cancellationToken);

    /// <summary>
    /// Replaces an extent's replica set in the store, in one transaction that also advances the volume's state version
    /// (a replica move: a new replica joins out of sync, and the one it replaces leaves once the new one is in sync).
    /// </summary>
    /// <param name="extent">The extent's index.</param>
    /// <param name="replicas">The new set. Replicas already in the set keep their stored state; a replica that joins
    /// must be <see cref="ReplicaState.OutOfSync"/> (it missed everything). An in-sync replica may leave only when the
    /// new set still has at least as many in-sync replicas as the volume's replica count; an out-of-sync one may
    /// leave at any time.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The volume's state version after the change.</returns>
    ValueTask<ulong> SetReplicasAsync(long extent, IReadOnlyList<ReplicaTarget> replicas, CancellationToken cancellationToken);
}
