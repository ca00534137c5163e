namespace Hci.Core.Cluster;

// Rebalance: nodes marked draining (hci/draining/<node>) take no new replica (placement leaves them out) and the
// owners move their replicas away; a node leaves the cluster (hci node remove) only when it holds no replica.
public sealed partial class ClusterCatalog
{
    private const string DrainingPrefix = "hci/draining/";

    /// <summary>
    /// Marks a node draining (or not): placement leaves a draining node out, so new extents never go there, and the
    /// owners move the replicas it holds to the nodes placement chooses.
    /// </summary>
    /// <param name="nodeId">The node (registered).</param>
    /// <param name="draining">True to drain it, false to take it back.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task that completes when the mark is stored.</returns>
    /// <exception cref="ClusterCatalogException">The node is not registered.</exception>
    public async Task SetNodeDrainingAsync(string nodeId, bool draining, CancellationToken cancellationToken = default)
    {
        ClusterNames.CheckNodeId(nodeId);
        if (await Store.GetAsync(CatalogKeys.Node(nodeId), cancellationToken).ConfigureAwait(false) is null)
        {
            throw new ClusterCatalogException(CatalogError.NotFound, $"Node '{nodeId}' is not registered (hci cluster status lists the nodes).");
        }

        await Store.TryCommitAsync([], [draining ? StoreWrite.Put(DrainingPrefix + nodeId, "{}"u8.ToArray()) : StoreWrite.Delete(DrainingPrefix + nodeId)], cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Lists the nodes marked draining.</summary>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>Their ids.</returns>
    public async Task<IReadOnlySet<string>> ListDrainingNodesAsync(CancellationToken cancellationToken = default)
    {
        var range = await Store.ListAsync(DrainingPrefix, cancellationToken).ConfigureAwait(false);
        return range.Entries.Select(e => e.Key[DrainingPrefix.Length..]).ToHashSet(StringComparer.Ordinal);
    }

    /// <summary>Counts the extent replicas a node holds, over every volume.</summary>
    /// <param name="nodeId">The node.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The count per volume name (volumes with none are left out).</returns>
    public async Task<IReadOnlyDictionary<string, long>> CountReplicasOnAsync(string nodeId, CancellationToken cancellationToken = default)
    {
        var result = new SortedDictionary<string, long>(StringComparer.Ordinal);
        foreach (var volume in await ListVolumesAsync(cancellationToken).ConfigureAwait(false))
        {
            long count = (await GetExtentsAsync(volume.Id, cancellationToken).ConfigureAwait(false)).Count(e => e.Replicas.Any(r => r.NodeId == nodeId));
            if (count > 0)
            {
                result[volume.Name] = count;
            }
        }

        return result;
    }

    /// <summary>
    /// Removes a node from the cluster: its record, drain mark and down record. Refused while the node is alive (stop
    /// its host first) or holds any replica (drain it first and wait until it holds none).
    /// </summary>
    /// <param name="nodeId">The node.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task that completes when the node is gone.</returns>
    /// <exception cref="ClusterCatalogException">The node is not registered, is alive, or holds replicas (the message
    /// says which and what to do).</exception>
    public async Task RemoveNodeAsync(string nodeId, CancellationToken cancellationToken = default)
    {
        ClusterNames.CheckNodeId(nodeId);
        var entry = await Store.GetAsync(CatalogKeys.Node(nodeId), cancellationToken).ConfigureAwait(false)
            ?? throw new ClusterCatalogException(CatalogError.NotFound, $"Node '{nodeId}' is not registered (hci cluster status lists the nodes).");
        var held = await CountReplicasOnAsync(nodeId, cancellationToken).ConfigureAwait(false);
        if (held.Count > 0)
        {
            string which = string.Join(", ", held.Take(5).Select(h => $"{h.Value} of volume {h.Key}")) + (held.Count > 5 ? ", ..." : string.Empty);
            throw new ClusterCatalogException(CatalogError.Invalid, $"Node '{nodeId}' still holds {held.Values.Sum()} extent replicas ({which}): drain it first (hci node drain {nodeId}), wait until hci cluster status shows it holds none, then remove it. Detached volumes move only when attached.");
        }

        if (await Store.GetAsync(CatalogKeys.AliveKey(nodeId), cancellationToken).ConfigureAwait(false) is not null)
        {
            throw new ClusterCatalogException(CatalogError.Invalid, $"Node '{nodeId}' is alive: stop its host first, then remove it (a running host registers itself again).");
        }

        await Store.TryCommitAsync(
            [new StoreCondition(CatalogKeys.Node(nodeId), entry.ModRevision)],
            [StoreWrite.Delete(CatalogKeys.Node(nodeId)), StoreWrite.Delete(DrainingPrefix + nodeId), StoreWrite.Delete(DownPrefix + nodeId)],
            cancellationToken).ConfigureAwait(false);
    }
}
