using Hci.Core.Replication;

namespace Hci.Core.Cluster;

/// <summary>
/// A <see cref="ReplicatedVolume"/>'s control side on the cluster catalog: allocations place the extent over the
/// current map, and replica state changes are transactions on the volume and extent records, serialized per volume
/// (each one compares the volume's epoch, which an out-of-sync mark advances).
/// </summary>
public sealed class CatalogVolumeControl : IVolumeControl
{
    private readonly ClusterCatalog _catalog;
    private readonly SemaphoreSlim _serial = new(1, 1);
    private VolumeRecord _volume;

    /// <summary>Creates the control for a volume this node owns.</summary>
    /// <param name="catalog">The catalog.</param>
    /// <param name="volume">The volume as read after this node attached it.</param>
    public CatalogVolumeControl(ClusterCatalog catalog, VolumeRecord volume)
    {
        _catalog = catalog ?? throw new ArgumentNullException(nameof(catalog));
        _volume = volume ?? throw new ArgumentNullException(nameof(volume));
    }

    /// <summary>
    /// Reads a volume this node owns from the catalog and attaches it: fences and reconciles its replicas and returns
    /// the volume, ready to be handed to a front-end.
    /// </summary>
    /// <param name="catalog">The catalog.</param>
    /// <param name="name">The volume's name.</param>
    /// <param name="localNodeId">This node; the volume's owner in the catalog must be this node.</param>
    /// <param name="connector">The way to the nodes' replica stores.</param>
    /// <param name="options">The volume's options; null for the defaults.</param>
    /// <param name="cancellationToken">Cancels the attach.</param>
    /// <returns>The attached volume.</returns>
    /// <exception cref="ClusterCatalogException">The volume does not exist or is owned by another node.</exception>
    public static async Task<ReplicatedVolume> OpenVolumeAsync(ClusterCatalog catalog, string name, string localNodeId, IReplicaConnector connector, ReplicatedVolumeOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        var volume = await catalog.GetVolumeAsync(name, cancellationToken).ConfigureAwait(false)
            ?? throw new ClusterCatalogException(CatalogError.NotFound, $"Volume '{name}' does not exist (hci volume list shows the volumes).");
        if (volume.Owner != localNodeId)
        {
            throw new ClusterCatalogException(CatalogError.Owned, $"Volume '{name}' is attached to '{volume.Owner ?? "no node"}', not to '{localNodeId}': attach it here first (hci volume attach {name} --node {localNodeId}).");
        }

        var extents = await catalog.GetExtentsAsync(volume.Id, cancellationToken).ConfigureAwait(false);
        var spec = new ReplicatedVolumeSpec
        {
            Name = volume.Name,
            VolumeId = volume.Id,
            Size = volume.Size,
            ExtentSize = volume.ExtentSize,
            Epoch = volume.Epoch,
            MinInSync = volume.MinInSync,
            LocalNodeId = localNodeId,
            Extents = extents.ToDictionary(e => e.Index, e => (IReadOnlyList<ReplicaTarget>)e.Replicas.Select(r => new ReplicaTarget(r.NodeId, r.Device, r.State)).ToArray()),
        };
        return await ReplicatedVolume.OpenAsync(spec, connector, new CatalogVolumeControl(catalog, volume), options, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc/>
    public async ValueTask<IReadOnlyList<ReplicaTarget>> AllocateExtentAsync(long extent, CancellationToken cancellationToken)
    {
        var record = await _catalog.AllocateExtentAsync(Volatile.Read(ref _volume), extent, cancellationToken).ConfigureAwait(false);
        return record.Replicas.Select(r => new ReplicaTarget(r.NodeId, r.Device, r.State)).ToArray();
    }

    /// <inheritdoc/>
    public async ValueTask<ulong> SetReplicaStateAsync(long extent, int replica, ReplicaState state, CancellationToken cancellationToken)
    {
        await _serial.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var volume = _volume;
            var record = await _catalog.GetExtentAsync(volume.Id, extent, cancellationToken).ConfigureAwait(false)
                ?? throw new ClusterCatalogException(CatalogError.NotFound, $"Extent {extent} of volume '{volume.Name}' is not allocated in the catalog.");
            if ((uint)replica >= (uint)record.Replicas.Count)
            {
                throw new ClusterCatalogException(CatalogError.NotFound, $"Extent {extent} of volume '{volume.Name}' has no replica {replica}.");
            }

            var target = record.Replicas[replica];
            var change = await _catalog.MarkReplicaStateAsync(volume.Name, extent, target.NodeId, target.Device, state, volume.Epoch, cancellationToken).ConfigureAwait(false);
            Volatile.Write(ref _volume, change.Volume);
            return change.Volume.Epoch;
        }
        finally
        {
            _serial.Release();
        }
    }

    /// <inheritdoc/>
    public async ValueTask<ulong> SetReplicasAsync(long extent, IReadOnlyList<ReplicaTarget> replicas, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(replicas);
        await _serial.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var volume = _volume;
            var change = await _catalog.SetExtentReplicasAsync(volume.Name, extent, replicas.Select(r => new ReplicaRecord(r.NodeId, r.Device, r.State)).ToArray(), volume.Epoch, cancellationToken).ConfigureAwait(false);
            Volatile.Write(ref _volume, change.Volume);
            return change.Volume.Epoch;
        }
        finally
        {
            _serial.Release();
        }
    }
}
