using Hci.Core.Replication;

namespace Hci.Core.Cluster;

// Rebuild: replica set changes (a replica move), when nodes went down (the rebuild countdown every node and the hci
// tool agree on), replacement placement over the live nodes, and rebuild progress as owners report it.
public sealed partial class ClusterCatalog
{
    private const string DownPrefix = "hci/down/";
    private const string RebuildPrefix = "hci/rebuild/";

    /// <summary>
    /// Replaces an extent's replica set, as the volume's owner at <paramref name="expectedEpoch"/>, in one transaction
    /// that also advances the volume's epoch (compare on both records' revisions): the caller goes on with the
    /// returned epoch. Replicas already in the set keep their stored state; a replica that joins must be
    /// <see cref="ReplicaState.OutOfSync"/> (it missed everything). A replica leaves only when it is not in sync, or
    /// when the new set keeps at least the volume's replica count in sync (its replacement is in sync already).
    /// </summary>
    /// <param name="volumeName">The volume's name.</param>
    /// <param name="extentIndex">The extent's index.</param>
    /// <param name="replicas">The new set, no device twice.</param>
    /// <param name="expectedEpoch">The caller's epoch: the change is refused when the volume's epoch is another.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The volume and extent as committed.</returns>
    /// <exception cref="ClusterCatalogException"><see cref="CatalogError.StaleEpoch"/> when the caller is no longer the
    /// owner; <see cref="CatalogError.NotFound"/> when the volume or extent does not exist;
    /// <see cref="CatalogError.Invalid"/> when the new set breaks a rule above.</exception>
    public async Task<ReplicaStateChange> SetExtentReplicasAsync(string volumeName, long extentIndex, IReadOnlyList<ReplicaRecord> replicas, ulong expectedEpoch, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(replicas);
        if (replicas.Count is < 1 or > 17 || replicas.Select(r => (r.NodeId, r.Device)).Distinct().Count() != replicas.Count)
        {
            throw new ClusterCatalogException(CatalogError.Invalid, $"Extent {extentIndex} of volume '{volumeName}': a replica set has 1 to 17 replicas (16 and one joining), each device once.");
        }

        string volumeKey = CatalogKeys.Volume(volumeName);
        for (int attempt = 0; attempt < MaxAttempts; attempt++)
        {
            var (volume, volumeRevision) = await RequireVolumeAsync(volumeName, cancellationToken).ConfigureAwait(false);
            if (volume.Epoch != expectedEpoch)
            {
                throw new ClusterCatalogException(CatalogError.StaleEpoch, $"Volume '{volumeName}' is at epoch {volume.Epoch}, not {expectedEpoch}: this owner was replaced (owner now '{volume.Owner}') and must stop changing it.");
            }

            string extentKey = CatalogKeys.Extent(volume.Id, extentIndex);
            var entry = await Store.GetAsync(extentKey, cancellationToken).ConfigureAwait(false)
                ?? throw new ClusterCatalogException(CatalogError.NotFound, $"Extent {extentIndex} of volume '{volumeName}' is not allocated.");
            var extent = Deserialize(entry, ClusterJsonContext.Default.ExtentRecord);
            var stored = extent.Replicas.ToDictionary(r => (r.NodeId, r.Device));
            var next = new ReplicaRecord[replicas.Count];
            for (int i = 0; i < replicas.Count; i++)
            {
                var r = replicas[i];
                ClusterNames.CheckNodeId(r.NodeId);
                if (stored.TryGetValue((r.NodeId, r.Device), out var had))
                {
                    next[i] = had;
                }
                else if (r.State != ReplicaState.OutOfSync)
                {
                    throw new ClusterCatalogException(CatalogError.Invalid, $"Extent {extentIndex} of volume '{volumeName}': new replica {r.NodeId}/{r.Device} must join out of sync (it holds nothing yet), not {r.State}.");
                }
                else
                {
                    next[i] = r;
                }
            }

            int inSync = next.Count(r => r.State == ReplicaState.InSync);
            foreach (var gone in extent.Replicas.Where(r => !next.Any(n => n.NodeId == r.NodeId && n.Device == r.Device)))
            {
                if (gone.State == ReplicaState.InSync && inSync < volume.Replicas)
                {
                    throw new ClusterCatalogException(CatalogError.Invalid, $"Extent {extentIndex} of volume '{volumeName}': in-sync replica {gone.NodeId}/{gone.Device} may leave only once its replacement is in sync ({inSync} of {volume.Replicas} would be).");
                }
            }

            var newExtent = extent with { Replicas = next };
            var newVolume = volume with { Epoch = volume.Epoch + 1 };
            var writes = new[]
            {
                StoreWrite.Put(extentKey, Serialize(newExtent, ClusterJsonContext.Default.ExtentRecord)),
                StoreWrite.Put(volumeKey, Serialize(newVolume, ClusterJsonContext.Default.VolumeRecord)),
            };
            if (await Store.TryCommitAsync([new StoreCondition(volumeKey, volumeRevision), new StoreCondition(extentKey, entry.ModRevision)], writes, cancellationToken).ConfigureAwait(false) is not null)
            {
                return new ReplicaStateChange(newVolume, newExtent);
            }
        }

        throw Contention($"change the replicas of extent {extentIndex} of volume '{volumeName}'");
    }

    /// <summary>
    /// Records which registered nodes are down, since when and when their replicas are to be rebuilt
    /// (<c>hci/down/&lt;node&gt;</c>): a node whose alive key is gone gets a record (the first writer's stays, so every
    /// node counts down to the same moment), a node that is alive again loses it. Every node calls this periodically.
    /// </summary>
    /// <param name="rebuildAfter">How long a node may stay down before its replicas are rebuilt elsewhere (recorded
    /// with a new record; an existing record keeps its own).</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The down nodes, by id.</returns>
    public async Task<IReadOnlyDictionary<string, NodeDownRecord>> UpdateDownNodesAsync(TimeSpan rebuildAfter, CancellationToken cancellationToken = default)
    {
        if (rebuildAfter <= TimeSpan.Zero || rebuildAfter.TotalSeconds > MaxRebuildAfterSeconds)
        {
            throw new ArgumentOutOfRangeException(nameof(rebuildAfter), rebuildAfter, "The rebuild interval must be positive and at most ten years.");
        }

        var nodes = await Store.ListAsync(CatalogKeys.Nodes, cancellationToken).ConfigureAwait(false);
        var alive = await Store.ListAsync(CatalogKeys.Alive, cancellationToken).ConfigureAwait(false);
        var aliveIds = alive.Entries.Select(e => e.Key[CatalogKeys.Alive.Length..]).ToHashSet(StringComparer.Ordinal);
        var registered = nodes.Entries.Select(e => e.Key[CatalogKeys.Nodes.Length..]).ToHashSet(StringComparer.Ordinal);
        var recorded = await ListDownEntriesAsync(cancellationToken).ConfigureAwait(false);
        var result = new SortedDictionary<string, NodeDownRecord>(StringComparer.Ordinal);
        foreach (string id in registered)
        {
            if (aliveIds.Contains(id))
            {
                if (recorded.TryGetValue(id, out var back))
                {
                    await Store.TryCommitAsync([new StoreCondition(DownPrefix + id, back.Revision)], [StoreWrite.Delete(DownPrefix + id)], cancellationToken).ConfigureAwait(false);
                }

                continue;
            }

            if (recorded.TryGetValue(id, out var down))
            {
                result[id] = down.Record;
                continue;
            }

            var record = new NodeDownRecord(_time.GetUtcNow(), rebuildAfter.TotalSeconds);
            if (await Store.TryCommitAsync([new StoreCondition(DownPrefix + id, 0)], [StoreWrite.Put(DownPrefix + id, Serialize(record, RebuildJsonContext.Default.NodeDownRecord))], cancellationToken).ConfigureAwait(false) is not null)
            {
                result[id] = record;
            }
            else if ((await ListDownEntriesAsync(cancellationToken).ConfigureAwait(false)).TryGetValue(id, out var other))
            {
                result[id] = other.Record;
            }
        }

        foreach (var (id, entry) in recorded)
        {
            if (!registered.Contains(id))
            {
                await Store.TryCommitAsync([new StoreCondition(DownPrefix + id, entry.Revision)], [StoreWrite.Delete(DownPrefix + id)], cancellationToken).ConfigureAwait(false);
            }
        }

        return result;
    }

    /// <summary>Reads the down nodes as recorded by <see cref="UpdateDownNodesAsync"/>.</summary>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The down nodes, by id.</returns>
    public async Task<IReadOnlyDictionary<string, NodeDownRecord>> ListDownNodesAsync(CancellationToken cancellationToken = default)
        => (await ListDownEntriesAsync(cancellationToken).ConfigureAwait(false)).ToDictionary(e => e.Key, e => e.Value.Record, StringComparer.Ordinal);

    /// <summary>
    /// Prepares the choice of replacement replicas over the live part of the map: nodes that are alive (or every
    /// registered node, with <paramref name="includeDown"/>) and not in <paramref name="excludeNodes"/>, at the
    /// failure-domain level given.
    /// </summary>
    /// <param name="level">The volume's failure-domain level.</param>
    /// <param name="excludeNodes">Nodes that take no replica (down, lost, draining).</param>
    /// <param name="includeDown">Place over down nodes too (rebalance: where placement wants replicas to be).</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The planner (build one per pass and reuse it for every extent).</returns>
    public async Task<ReplacementPlanner> GetReplacementPlannerAsync(FailureDomainLevel level, IReadOnlySet<string> excludeNodes, bool includeDown = false, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(excludeNodes);
        var map = await GetMapAsync(cancellationToken).ConfigureAwait(false);
        var liveNodes = map.Nodes.Where(n => (n.Alive || includeDown) && !excludeNodes.Contains(n.Id)).ToArray();
        var liveIds = liveNodes.Select(n => n.Id).ToHashSet(StringComparer.Ordinal);
        var live = new ClusterMap(map.Epoch, liveNodes, map.Devices.Where(d => liveIds.Contains(d.NodeId)));
        return new ReplacementPlanner(map, new Placement(live, level));
    }

    /// <summary>Stores a volume's rebuild progress (<c>hci/rebuild/&lt;volume&gt;</c>), as its owner reports it.</summary>
    /// <param name="progress">The progress.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task that completes when stored.</returns>
    public async Task PutRebuildProgressAsync(RebuildProgress progress, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(progress);
        ClusterNames.CheckVolumeName(progress.Volume);
        await Store.TryCommitAsync([], [StoreWrite.Put(RebuildPrefix + progress.Volume, Serialize(progress, RebuildJsonContext.Default.RebuildProgress))], cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Reads every volume's last reported rebuild progress, by volume name.</summary>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The progress records.</returns>
    public async Task<IReadOnlyList<RebuildProgress>> ListRebuildProgressAsync(CancellationToken cancellationToken = default)
    {
        var range = await Store.ListAsync(RebuildPrefix, cancellationToken).ConfigureAwait(false);
        return range.Entries.Select(e => Deserialize(e, RebuildJsonContext.Default.RebuildProgress)).ToArray();
    }

    // Ten years: far beyond any sensible interval, and far from DateTimeOffset's end.
    private const double MaxRebuildAfterSeconds = 10 * 366 * 24 * 3600.0;

    private async Task<Dictionary<string, (NodeDownRecord Record, long Revision)>> ListDownEntriesAsync(CancellationToken cancellationToken)
    {
        var range = await Store.ListAsync(DownPrefix, cancellationToken).ConfigureAwait(false);
        var result = new Dictionary<string, (NodeDownRecord, long)>(StringComparer.Ordinal);
        foreach (var entry in range.Entries)
        {
            var record = Deserialize(entry, RebuildJsonContext.Default.NodeDownRecord);

            // Read from the store, so checked before RebuildAt is computed from it (a value out of range would throw
            // in every reader, on every node's rebuild check).
            if (!double.IsFinite(record.RebuildAfterSeconds) || record.RebuildAfterSeconds < 0 || record.RebuildAfterSeconds > MaxRebuildAfterSeconds
                || record.Since.Year > 9000)
            {
                throw new ClusterCatalogException(CatalogError.Corrupt, $"The record at '{entry.Key}' holds a rebuild interval of {record.RebuildAfterSeconds} s from {record.Since:O}, out of range: it was written by something other than Hci, or damaged. Delete the key (a node writes it again while the node is down).");
            }

            result[entry.Key[DownPrefix.Length..]] = (record, entry.ModRevision);
        }

        return result;
    }
}
