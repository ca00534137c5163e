using System.Collections.Concurrent;
using Hci.Core.Cluster;
using Hci.Core.Replication;

namespace Hci.Testing.Replication;

/// <summary>
/// The cluster store's side of a replicated volume kept in memory, for tests of the replication logic on its own:
/// extents get the replica set the test's placement gives, state changes are recorded, and the store can be made
/// unreachable (calls throw <see cref="ClusterStoreException"/>) to inject that fault. The real catalog on a real
/// store is tested through <c>CatalogVolumeControl</c>.
/// </summary>
public sealed class MemoryVolumeControl(Func<long, IReadOnlyList<ReplicaTarget>> placement) : IVolumeControl
{
    private readonly Lock _lock = new();
    private ulong _version;

    /// <summary>The allocated extents and their replicas, as the store has them.</summary>
    public ConcurrentDictionary<long, ReplicaTarget[]> Extents { get; } = new();

    /// <summary>When true, every call fails as an unreachable store would.</summary>
    public bool Unreachable { get; set; }

    /// <summary>How many state changes were recorded.</summary>
    public int StateChanges { get; private set; }

    /// <summary>The state of one replica in the store.</summary>
    public ReplicaState StateOf(long extent, int replica) => Extents[extent][replica].State;

    /// <summary>The extents as a spec's <see cref="ReplicatedVolumeSpec.Extents"/> for a next attach.</summary>
    public IReadOnlyDictionary<long, IReadOnlyList<ReplicaTarget>> Snapshot()
    {
        lock (_lock)
        {
            return Extents.ToDictionary(e => e.Key, e => (IReadOnlyList<ReplicaTarget>)[.. e.Value]);
        }
    }

    /// <inheritdoc/>
    public ValueTask<IReadOnlyList<ReplicaTarget>> AllocateExtentAsync(long extent, CancellationToken cancellationToken)
    {
        ThrowIfUnreachable();
        lock (_lock)
        {
            return ValueTask.FromResult<IReadOnlyList<ReplicaTarget>>(Extents.GetOrAdd(extent, e => [.. placement(e)]));
        }
    }

    /// <inheritdoc/>
    public ValueTask<ulong> SetReplicaStateAsync(long extent, int replica, ReplicaState state, CancellationToken cancellationToken)
    {
        ThrowIfUnreachable();
        lock (_lock)
        {
            var replicas = Extents[extent];
            replicas[replica] = replicas[replica] with { State = state };
            StateChanges++;
            return ValueTask.FromResult(++_version);
        }
    }

    private void ThrowIfUnreachable()
    {
        if (Unreachable)
        {
            throw new ClusterStoreException("the test made the cluster store unreachable");
        }
    }
}
