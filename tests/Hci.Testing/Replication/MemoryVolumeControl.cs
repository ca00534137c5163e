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

    /// <summary>The volume's replica count (an in-sync replica leaves a set only when this many stay in sync).</summary>
    public int ReplicaCount { get; init; } = 3;

    /// <summary>How many replica set changes were recorded.</summary>
    public int SetChanges { get; private set; }

    /// <summary>When set, called before every state change with the extent, the replica index and the new state
    /// (a test's hook to inject a fault at that moment).</summary>
    public Action<long, int, ReplicaState>? BeforeStateChange { get; set; }

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
        BeforeStateChange?.Invoke(extent, replica, state);
        ThrowIfUnreachable();
        lock (_lock)
        {
            var replicas = Extents[extent];
            replicas[replica] = replicas[replica] with { State = state };
            StateChanges++;
            return ValueTask.FromResult(++_version);
        }
    }

    /// <inheritdoc/>
    public ValueTask<ulong> SetReplicasAsync(long extent, IReadOnlyList<ReplicaTarget> replicas, CancellationToken cancellationToken)
    {
        ThrowIfUnreachable();
        lock (_lock)
        {
            // The catalog's rules: kept replicas keep their stored state, new ones join out of sync, an in-sync one
            // leaves only when its replacement is in sync.
            var stored = Extents[extent];
            var next = new ReplicaTarget[replicas.Count];
            for (int i = 0; i < next.Length; i++)
            {
                int at = Array.FindIndex(stored, s => s.NodeId == replicas[i].NodeId && s.Device == replicas[i].Device);
                if (at < 0 && replicas[i].State != ReplicaState.OutOfSync)
                {
                    throw new ClusterCatalogException(CatalogError.Invalid, $"new replica {replicas[i].NodeId}/{replicas[i].Device} must join out of sync");
                }

                next[i] = at >= 0 ? stored[at] : replicas[i];
            }

            int inSync = next.Count(r => r.State == ReplicaState.InSync);
            foreach (var gone in stored.Where(s => !next.Any(n => n.NodeId == s.NodeId && n.Device == s.Device)))
            {
                if (gone.State == ReplicaState.InSync && inSync < ReplicaCount)
                {
                    throw new ClusterCatalogException(CatalogError.Invalid, $"in-sync replica {gone.NodeId}/{gone.Device} may not leave before its replacement is in sync");
                }
            }

            Extents[extent] = next;
            SetChanges++;
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
