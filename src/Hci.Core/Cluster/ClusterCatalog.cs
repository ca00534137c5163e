using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Hci.Core.Replication;

namespace Hci.Core.Cluster;

/// <summary>
/// Typed access to the cluster's metadata over an <see cref="IClusterStore"/> (etcd or the local store): nodes and
/// their membership, the cluster map, volumes with their owner and epoch, and extents with their replica sets and
/// states. Every change is a compare-and-swap transaction, so concurrent writers (hosts, the <c>hci</c> tool, owners
/// marking replicas) never lose each other's updates. Keys and values are described in docs/cluster.md.
/// </summary>
/// <remarks>
/// Refusals (a duplicate name, a volume owned by another node, a stale epoch) are
/// <see cref="ClusterCatalogException"/>s whose <see cref="ClusterCatalogException.Error"/> says which; a store that
/// cannot be reached throws <see cref="ClusterStoreException"/>. Control plane only; thread-safe.
/// </remarks>
public sealed partial class ClusterCatalog
{
    private const int MaxAttempts = 64;
    private const int DeleteBatch = 64; // under etcd's default limit of 128 operations per transaction

    private readonly TimeProvider _time;
    private readonly Lock _placementLock = new();
    private string? _placementFingerprint;
    private Dictionary<FailureDomainLevel, Placement> _placements = [];

    /// <summary>Creates a catalog over <paramref name="store"/> (which the caller keeps and disposes).</summary>
    /// <param name="store">The cluster store.</param>
    /// <param name="timeProvider">The clock for creation times; the system clock when null.</param>
    public ClusterCatalog(IClusterStore store, TimeProvider? timeProvider = null)
    {
        ArgumentNullException.ThrowIfNull(store);
        Store = store;
        _time = timeProvider ?? TimeProvider.System;
    }

    /// <summary>The store underneath.</summary>
    public IClusterStore Store { get; }

    /// <summary>Registers (or updates) a node and its devices.</summary>
    /// <param name="node">The node.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task that completes when the record is stored.</returns>
    /// <exception cref="ClusterCatalogException">The id, address, domain or a device is invalid.</exception>
    public async Task RegisterNodeAsync(NodeRecord node, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(node);
        ClusterNames.CheckNodeId(node.Id);
        ClusterNames.CheckAddress(node.Address);
        ClusterNames.CheckDomain(node.Domain);
        var indexes = new HashSet<int>();
        foreach (var device in node.Devices)
        {
            if (device.Index < 0 || !indexes.Add(device.Index) || device.Capacity <= 0 || !(device.Weight >= 0) || double.IsInfinity(device.Weight))
            {
                throw new ClusterCatalogException(CatalogError.Invalid, $"Node '{node.Id}': device {device.Index} (capacity {device.Capacity}, weight {device.Weight}) is invalid: indexes are distinct and 0 or more, capacities positive, weights finite and 0 or more.");
            }
        }

        await Store.TryCommitAsync([], [StoreWrite.Put(CatalogKeys.Node(node.Id), Serialize(node, ClusterJsonContext.Default.NodeRecord))], cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Marks a node alive for as long as <paramref name="lease"/> holds (its key goes when the lease lapses:
    /// the node is down).</summary>
    /// <param name="nodeId">The node.</param>
    /// <param name="lease">The node's membership lease.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task that completes when the key is stored.</returns>
    public async Task SetAliveAsync(string nodeId, IStoreLease lease, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(lease);
        ClusterNames.CheckNodeId(nodeId);
        await Store.TryCommitAsync([], [StoreWrite.Put(CatalogKeys.AliveKey(nodeId), ReadOnlyMemory<byte>.Empty, lease.Id)], cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Lists the registered nodes, by id.</summary>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The nodes.</returns>
    public async Task<IReadOnlyList<NodeRecord>> ListNodesAsync(CancellationToken cancellationToken = default)
    {
        var range = await Store.ListAsync(CatalogKeys.Nodes, cancellationToken).ConfigureAwait(false);
        return range.Entries.Select(e => Deserialize(e, ClusterJsonContext.Default.NodeRecord)).ToArray();
    }

    /// <summary>Reads the cluster map: the registered nodes and devices, and which nodes are alive.</summary>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The map; its epoch is the store revision of the read.</returns>
    public async Task<ClusterMap> GetMapAsync(CancellationToken cancellationToken = default)
    {
        var nodes = await Store.ListAsync(CatalogKeys.Nodes, cancellationToken).ConfigureAwait(false);
        var alive = await Store.ListAsync(CatalogKeys.Alive, cancellationToken).ConfigureAwait(false);
        var aliveIds = alive.Entries.Select(e => e.Key[CatalogKeys.Alive.Length..]).ToHashSet(StringComparer.Ordinal);
        return ClusterMap.FromRecords(nodes.Revision, nodes.Entries.Select(e => Deserialize(e, ClusterJsonContext.Default.NodeRecord)), aliveIds.Contains);
    }

    /// <summary>
    /// Creates a volume: allocates its id from <c>hci/next-volume-id</c> and stores its record, in one transaction.
    /// Nothing is placed yet (extents are allocated at their first write), but the cluster map must be able to hold
    /// the replicas asked for.
    /// </summary>
    /// <param name="name">The name (<c>[a-z0-9][a-z0-9._-]{0,62}</c>).</param>
    /// <param name="size">The size in bytes, a multiple of 4 KiB.</param>
    /// <param name="replicas">The replica count (1 to 16).</param>
    /// <param name="minInSync">The fewest in-sync replicas writes go on with; <see cref="VolumeRecord.DefaultMinInSync"/> when null.</param>
    /// <param name="domainLevel">The failure-domain level replicas differ at.</param>
    /// <param name="extentSize">The extent size (a power of two of 256 KiB to 1 GiB); 4 MiB when null.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The new volume.</returns>
    /// <exception cref="ClusterCatalogException">An argument is invalid, the name is taken, or the map cannot hold the
    /// replicas (<see cref="CatalogError.NoPlacement"/>, saying what to do).</exception>
    public async Task<VolumeRecord> CreateVolumeAsync(string name, long size, int replicas, int? minInSync = null, FailureDomainLevel domainLevel = FailureDomainLevel.Host, long? extentSize = null, CancellationToken cancellationToken = default)
    {
        ClusterNames.CheckVolumeName(name);
        CheckSize(size);
        if (replicas is < 1 or > 16)
        {
            throw new ClusterCatalogException(CatalogError.Invalid, $"{replicas} replicas: a volume has 1 to 16 (3 is usual).");
        }

        int min = minInSync ?? VolumeRecord.DefaultMinInSync(replicas);
        if (min < 1 || min > replicas)
        {
            throw new ClusterCatalogException(CatalogError.Invalid, $"A minimum of {min} in-sync replicas does not fit {replicas} replicas: give 1 to {replicas}.");
        }

        long extent = extentSize ?? ReplicaGeometry.DefaultExtentSize;
        if (extent < ReplicaGeometry.BlockSize * ReplicaGeometry.RegionsPerExtent || extent > 1L << 30 || (extent & (extent - 1)) != 0)
        {
            throw new ClusterCatalogException(CatalogError.Invalid, $"An extent size of {extent} bytes is not supported: give a power of two from 256 KiB to 1 GiB (4 MiB is the default).");
        }

        var placement = await GetPlacementAsync(domainLevel, cancellationToken).ConfigureAwait(false);
        try
        {
            placement.EnsurePlaceable(replicas);
        }
        catch (PlacementException ex)
        {
            throw new ClusterCatalogException(CatalogError.NoPlacement, $"Cannot create volume '{name}': {ex.Message}", ex);
        }

        string key = CatalogKeys.Volume(name);
        for (int attempt = 0; attempt < MaxAttempts; attempt++)
        {
            if (await Store.GetAsync(key, cancellationToken).ConfigureAwait(false) is not null)
            {
                throw new ClusterCatalogException(CatalogError.AlreadyExists, $"A volume named '{name}' exists already: choose another name, or delete it first (hci volume delete {name}).");
            }

            var counter = await Store.GetAsync(CatalogKeys.NextVolumeId, cancellationToken).ConfigureAwait(false);
            ulong id = 1;
            if (counter is { } c && !ulong.TryParse(Encoding.UTF8.GetString(c.Value.Span), NumberStyles.None, CultureInfo.InvariantCulture, out id))
            {
                throw new ClusterCatalogException(CatalogError.Corrupt, $"The key {CatalogKeys.NextVolumeId} holds '{Encoding.UTF8.GetString(c.Value.Span)}', not a volume id: repair it (a number above every volume's id).");
            }

            var volume = new VolumeRecord
            {
                Name = name,
                Id = id,
                Size = size,
                Replicas = replicas,
                MinInSync = min,
                ExtentSize = extent,
                DomainLevel = domainLevel,
                CreatedAt = _time.GetUtcNow(),
            };
            var committed = await Store.TryCommitAsync(
                [new StoreCondition(key, 0), new StoreCondition(CatalogKeys.NextVolumeId, counter?.ModRevision ?? 0)],
                [StoreWrite.Put(CatalogKeys.NextVolumeId, Encoding.UTF8.GetBytes((id + 1).ToString(CultureInfo.InvariantCulture))), StoreWrite.Put(key, Serialize(volume, ClusterJsonContext.Default.VolumeRecord))],
                cancellationToken).ConfigureAwait(false);
            if (committed is not null)
            {
                return volume;
            }
        }

        throw Contention($"create volume '{name}'");
    }

    /// <summary>Reads a volume.</summary>
    /// <param name="name">The volume's name.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The volume, or null when there is none of that name.</returns>
    public async Task<VolumeRecord?> GetVolumeAsync(string name, CancellationToken cancellationToken = default)
        => (await ReadVolumeAsync(name, cancellationToken).ConfigureAwait(false))?.Volume;

    /// <summary>Lists the volumes, by name.</summary>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The volumes.</returns>
    public async Task<IReadOnlyList<VolumeRecord>> ListVolumesAsync(CancellationToken cancellationToken = default)
        => (await ListVolumesWithRevisionAsync(cancellationToken).ConfigureAwait(false)).Volumes;

    /// <summary>Lists the volumes with the store revision they were read at: watch from it with
    /// <see cref="WatchVolumesAsync"/> to miss no change.</summary>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The volumes, by name, and the revision.</returns>
    public async Task<(IReadOnlyList<VolumeRecord> Volumes, long Revision)> ListVolumesWithRevisionAsync(CancellationToken cancellationToken = default)
    {
        var range = await Store.ListAsync(CatalogKeys.Volumes, cancellationToken).ConfigureAwait(false);
        return (range.Entries.Select(e => Deserialize(e, ClusterJsonContext.Default.VolumeRecord)).ToArray(), range.Revision);
    }

    /// <summary>Streams the changes of volume records after <paramref name="afterRevision"/>, in order.</summary>
    /// <param name="afterRevision">The revision already seen (from <see cref="ListVolumesWithRevisionAsync"/>).</param>
    /// <param name="cancellationToken">Ends the watch.</param>
    /// <returns>The changes.</returns>
    public async IAsyncEnumerable<VolumeChange> WatchVolumesAsync(long afterRevision, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        await foreach (var change in Store.WatchAsync(CatalogKeys.Volumes, afterRevision, cancellationToken).ConfigureAwait(false))
        {
            string name = change.Entry.Key[CatalogKeys.Volumes.Length..];
            yield return new VolumeChange(name, change.Deleted ? null : Deserialize(change.Entry, ClusterJsonContext.Default.VolumeRecord), change.Entry.ModRevision);
        }
    }

    /// <summary>Deletes a detached volume, its extent records and its rebuild and scrub records.</summary>
    /// <param name="name">The volume's name.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task that completes when the volume is gone.</returns>
    /// <exception cref="ClusterCatalogException">The volume does not exist, or is attached.</exception>
    public async Task DeleteVolumeAsync(string name, CancellationToken cancellationToken = default)
    {
        for (int attempt = 0; attempt < MaxAttempts; attempt++)
        {
            var (volume, revision) = await RequireVolumeAsync(name, cancellationToken).ConfigureAwait(false);
            if (volume.Owner is not null)
            {
                throw new ClusterCatalogException(CatalogError.Attached, $"Volume '{name}' is attached to node '{volume.Owner}': detach it first (hci volume detach {name}).");
            }

            // Its rebuild and scrub records go with it: they are kept by name, and a new volume may take the name.
            StoreWrite[] deletes = [StoreWrite.Delete(CatalogKeys.Volume(name)), StoreWrite.Delete(RebuildPrefix + name), StoreWrite.Delete(ScrubPrefix + name)];
            if (await Store.TryCommitAsync([new StoreCondition(CatalogKeys.Volume(name), revision)], deletes, cancellationToken).ConfigureAwait(false) is null)
            {
                continue;
            }

            // The volume is gone; its id is never reused, so its extent records are unreachable and go in batches
            // (a volume may have more than one transaction may hold). A crash here leaves unreachable records only.
            var extents = await Store.ListAsync(CatalogKeys.ExtentsOf(volume.Id), cancellationToken).ConfigureAwait(false);
            foreach (var batch in extents.Entries.Chunk(DeleteBatch))
            {
                await Store.TryCommitAsync([], batch.Select(e => StoreWrite.Delete(e.Key)).ToArray(), cancellationToken).ConfigureAwait(false);
            }

            return;
        }

        throw Contention($"delete volume '{name}'");
    }

    /// <summary>Grows a volume.</summary>
    /// <param name="name">The volume's name.</param>
    /// <param name="size">The new size in bytes: a multiple of 4 KiB, not below the current size.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The volume as stored.</returns>
    /// <exception cref="ClusterCatalogException">The volume does not exist, or the size is invalid or smaller.</exception>
    public Task<VolumeRecord> ResizeVolumeAsync(string name, long size, CancellationToken cancellationToken = default)
    {
        CheckSize(size);
        return UpdateVolumeAsync(
            name,
            volume => size < volume.Size
                ? throw new ClusterCatalogException(CatalogError.Invalid, $"Volume '{name}' has {volume.Size} bytes; {size} would shrink it, and volumes only grow. Give a size of at least {volume.Size}.")
                : size == volume.Size ? null : volume with { Size = size },
            "resize",
            cancellationToken);
    }

    /// <summary>
    /// Attaches a volume to <paramref name="nodeId"/>, its owner, taking a new epoch (epoch + 1) by compare-and-swap:
    /// replicas refuse the previous owner from then on.
    /// </summary>
    /// <remarks>
    /// A volume attached to another node moves without <paramref name="force"/> only when that node is down: its
    /// membership lease has lapsed (<c>hci/alive/&lt;node&gt;</c> is gone), so it fences its own attachments and can
    /// acknowledge nothing more. The check and the move are one transaction (the alive key must still be absent), so
    /// an owner that comes back meanwhile keeps its volume. While the owner is alive, only <paramref name="force"/>
    /// moves it: the new epoch fences the old owner on every replica the new one reaches at attach.
    /// </remarks>
    /// <param name="name">The volume's name.</param>
    /// <param name="nodeId">The new owner (a registered node).</param>
    /// <param name="force">Take the volume even from an owner whose membership lease still holds.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The volume with its new owner and epoch.</returns>
    /// <exception cref="ClusterCatalogException">The volume or node does not exist, or another node that is alive owns
    /// the volume and <paramref name="force"/> is false.</exception>
    public async Task<VolumeRecord> AttachAsync(string name, string nodeId, bool force = false, CancellationToken cancellationToken = default)
    {
        ClusterNames.CheckNodeId(nodeId);
        if (await Store.GetAsync(CatalogKeys.Node(nodeId), cancellationToken).ConfigureAwait(false) is null)
        {
            throw new ClusterCatalogException(CatalogError.NotFound, $"Node '{nodeId}' is not registered: start it (a host with --node {nodeId}) or check the id (hci cluster status lists the nodes).");
        }

        string key = CatalogKeys.Volume(name);
        for (int attempt = 0; attempt < MaxAttempts; attempt++)
        {
            var (volume, revision) = await RequireVolumeAsync(name, cancellationToken).ConfigureAwait(false);
            var conditions = new List<StoreCondition>(2) { new(key, revision) };
            if (volume.Owner is { } owner && owner != nodeId && !force)
            {
                string aliveKey = CatalogKeys.AliveKey(owner);
                if (await Store.GetAsync(aliveKey, cancellationToken).ConfigureAwait(false) is not null)
                {
                    throw new ClusterCatalogException(CatalogError.Owned, $"Volume '{name}' is attached to node '{owner}', which is alive (its membership lease holds): detach it there first (hci volume detach {name}). If '{owner}' is cut off or hung rather than down, wait until its lease lapses (hci cluster status shows it down), then attach again; --force takes the volume at once and is safe only when '{owner}' can no longer reach any replica.");
                }

                conditions.Add(new StoreCondition(aliveKey, 0));
            }

            var updated = volume with { Owner = nodeId, Epoch = volume.Epoch + 1 };
            if (await Store.TryCommitAsync(conditions, [StoreWrite.Put(key, Serialize(updated, ClusterJsonContext.Default.VolumeRecord))], cancellationToken).ConfigureAwait(false) is not null)
            {
                return updated;
            }
        }

        throw Contention($"attach volume '{name}'");
    }

    /// <summary>Detaches a volume (no owner), advancing its epoch so that the previous owner can change nothing more.</summary>
    /// <param name="name">The volume's name.</param>
    /// <param name="expectedOwner">When given, detach only from this owner.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The volume as stored.</returns>
    /// <exception cref="ClusterCatalogException">The volume does not exist, or another node than
    /// <paramref name="expectedOwner"/> owns it.</exception>
    public Task<VolumeRecord> DetachAsync(string name, string? expectedOwner = null, CancellationToken cancellationToken = default)
        => UpdateVolumeAsync(
            name,
            volume => volume.Owner is null ? null
                : expectedOwner is not null && volume.Owner != expectedOwner
                    ? throw new ClusterCatalogException(CatalogError.Owned, $"Volume '{name}' is attached to node '{volume.Owner}', not '{expectedOwner}'.")
                    : volume with { Owner = null, Epoch = volume.Epoch + 1 },
            "detach",
            cancellationToken);

    /// <summary>Reads the allocated extents of a volume.</summary>
    /// <param name="volumeId">The volume's id.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The extents, by index (unallocated ones are absent: they read as zeros).</returns>
    public async Task<IReadOnlyList<ExtentRecord>> GetExtentsAsync(ulong volumeId, CancellationToken cancellationToken = default)
    {
        var range = await Store.ListAsync(CatalogKeys.ExtentsOf(volumeId), cancellationToken).ConfigureAwait(false);
        return range.Entries.Select(e => Deserialize(e, ClusterJsonContext.Default.ExtentRecord)).ToArray();
    }

    /// <summary>Reads one extent.</summary>
    /// <param name="volumeId">The volume's id.</param>
    /// <param name="index">The extent's index.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The extent, or null when it is not allocated.</returns>
    public async Task<ExtentRecord?> GetExtentAsync(ulong volumeId, long index, CancellationToken cancellationToken = default)
    {
        var entry = await Store.GetAsync(CatalogKeys.Extent(volumeId, index), cancellationToken).ConfigureAwait(false);
        return entry is { } e ? Deserialize(e, ClusterJsonContext.Default.ExtentRecord) : null;
    }

    /// <summary>
    /// Allocates an extent at its first write: places its replicas over the current map (all in sync: an unwritten
    /// extent reads as zeros everywhere) and stores the record if no other writer did first.
    /// </summary>
    /// <param name="volume">The volume.</param>
    /// <param name="index">The extent's index (below <see cref="VolumeRecord.ExtentCount"/>).</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The extent as stored: the new record, or the one another writer stored first.</returns>
    /// <exception cref="ClusterCatalogException">The index is out of range, or the map cannot hold the replicas.</exception>
    public async Task<ExtentRecord> AllocateExtentAsync(VolumeRecord volume, long index, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(volume);
        if (index < 0 || index >= volume.ExtentCount)
        {
            throw new ClusterCatalogException(CatalogError.Invalid, $"Extent {index} is outside volume '{volume.Name}' ({volume.ExtentCount} extents).");
        }

        string key = CatalogKeys.Extent(volume.Id, index);
        for (int attempt = 0; attempt < MaxAttempts; attempt++)
        {
            if (await Store.GetAsync(key, cancellationToken).ConfigureAwait(false) is { } existing)
            {
                return Deserialize(existing, ClusterJsonContext.Default.ExtentRecord);
            }

            var placement = await GetPlacementAsync(volume.DomainLevel, cancellationToken).ConfigureAwait(false);
            DeviceInfo[] devices;
            try
            {
                devices = placement.Place(volume.Id, index, volume.Replicas);
            }
            catch (PlacementException ex)
            {
                throw new ClusterCatalogException(CatalogError.NoPlacement, $"Cannot place extent {index} of volume '{volume.Name}': {ex.Message}", ex);
            }

            var extent = new ExtentRecord(index, devices.Select(d => new ReplicaRecord(d.NodeId, d.Index, ReplicaState.InSync)).ToArray());
            if (await Store.TryCommitAsync([new StoreCondition(key, 0)], [StoreWrite.Put(key, Serialize(extent, ClusterJsonContext.Default.ExtentRecord))], cancellationToken).ConfigureAwait(false) is not null)
            {
                return extent;
            }
        }

        throw Contention($"allocate extent {index} of volume '{volume.Name}'");
    }

    /// <summary>
    /// Changes the state of one replica of an extent, as the volume's owner at <paramref name="expectedEpoch"/>. A
    /// change to <see cref="ReplicaState.OutOfSync"/> also advances the volume's epoch, in the same transaction
    /// (compare on both records' revisions): the caller goes on with the returned epoch.
    /// </summary>
    /// <param name="volumeName">The volume's name.</param>
    /// <param name="extentIndex">The extent's index.</param>
    /// <param name="nodeId">The replica's node.</param>
    /// <param name="device">The replica's device index on that node.</param>
    /// <param name="state">The new state.</param>
    /// <param name="expectedEpoch">The caller's epoch: the change is refused when the volume's epoch is another.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The volume and extent as committed (unchanged when the replica already had the state).</returns>
    /// <exception cref="ClusterCatalogException"><see cref="CatalogError.StaleEpoch"/> when the caller's epoch is no
    /// longer the volume's (it lost ownership: it must stop writing); <see cref="CatalogError.NotFound"/> when the
    /// volume, extent or replica does not exist.</exception>
    public async Task<ReplicaStateChange> MarkReplicaStateAsync(string volumeName, long extentIndex, string nodeId, int device, ReplicaState state, ulong expectedEpoch, CancellationToken cancellationToken = default)
    {
        string volumeKey = CatalogKeys.Volume(volumeName);
        for (int attempt = 0; attempt < MaxAttempts; attempt++)
        {
            var (volume, volumeRevision) = await RequireVolumeAsync(volumeName, cancellationToken).ConfigureAwait(false);
            if (volume.Epoch != expectedEpoch)
            {
                throw new ClusterCatalogException(CatalogError.StaleEpoch, $"Volume '{volumeName}' is at epoch {volume.Epoch}, not {expectedEpoch}: this owner was replaced (owner now '{volume.Owner}') and must stop writing.");
            }

            string extentKey = CatalogKeys.Extent(volume.Id, extentIndex);
            var entry = await Store.GetAsync(extentKey, cancellationToken).ConfigureAwait(false)
                ?? throw new ClusterCatalogException(CatalogError.NotFound, $"Extent {extentIndex} of volume '{volumeName}' is not allocated.");
            var extent = Deserialize(entry, ClusterJsonContext.Default.ExtentRecord);
            int at = -1;
            for (int i = 0; i < extent.Replicas.Count; i++)
            {
                if (extent.Replicas[i].NodeId == nodeId && extent.Replicas[i].Device == device)
                {
                    at = i;
                }
            }

            if (at < 0)
            {
                throw new ClusterCatalogException(CatalogError.NotFound, $"Extent {extentIndex} of volume '{volumeName}' has no replica on {nodeId}/{device}.");
            }

            var old = extent.Replicas[at];
            if (old.State == state)
            {
                return new ReplicaStateChange(volume, extent);
            }

            var replicas = extent.Replicas.ToArray();
            replicas[at] = old with { State = state };
            var newExtent = extent with { Replicas = replicas };
            var writes = new List<StoreWrite>(2) { StoreWrite.Put(extentKey, Serialize(newExtent, ClusterJsonContext.Default.ExtentRecord)) };
            var newVolume = volume;
            if (state == ReplicaState.OutOfSync)
            {
                newVolume = volume with { Epoch = volume.Epoch + 1 };
                writes.Add(StoreWrite.Put(volumeKey, Serialize(newVolume, ClusterJsonContext.Default.VolumeRecord)));
            }

            if (await Store.TryCommitAsync([new StoreCondition(volumeKey, volumeRevision), new StoreCondition(extentKey, entry.ModRevision)], writes, cancellationToken).ConfigureAwait(false) is not null)
            {
                return new ReplicaStateChange(newVolume, newExtent);
            }
        }

        throw Contention($"mark a replica of extent {extentIndex} of volume '{volumeName}'");
    }

    private static void CheckSize(long size)
    {
        if (size <= 0 || size % ReplicaGeometry.BlockSize != 0)
        {
            throw new ClusterCatalogException(CatalogError.Invalid, $"A volume size of {size} bytes is not supported: give a positive multiple of 4 KiB (e.g. 10G).");
        }
    }

    private static ClusterCatalogException Contention(string what)
        => new(CatalogError.Contention, $"Could not {what}: other writers changed the same records {MaxAttempts} times in a row. Try again.");

    private static byte[] Serialize<T>(T value, JsonTypeInfo<T> type) => JsonSerializer.SerializeToUtf8Bytes(value, type);

    private static T Deserialize<T>(StoreEntry entry, JsonTypeInfo<T> type)
    {
        try
        {
            return JsonSerializer.Deserialize(entry.Value.Span, type) ?? throw new JsonException("null");
        }
        catch (JsonException ex)
        {
            throw new ClusterCatalogException(CatalogError.Corrupt, $"The record at '{entry.Key}' is not a valid {typeof(T).Name} ({ex.Message}): it was written by something other than Hci, or damaged. Repair or delete the key.", ex);
        }
    }

    private async Task<(VolumeRecord Volume, long Revision)?> ReadVolumeAsync(string name, CancellationToken cancellationToken)
    {
        ClusterNames.CheckVolumeName(name);
        var entry = await Store.GetAsync(CatalogKeys.Volume(name), cancellationToken).ConfigureAwait(false);
        return entry is { } e ? (Deserialize(e, ClusterJsonContext.Default.VolumeRecord), e.ModRevision) : null;
    }

    private async Task<(VolumeRecord Volume, long Revision)> RequireVolumeAsync(string name, CancellationToken cancellationToken)
        => await ReadVolumeAsync(name, cancellationToken).ConfigureAwait(false)
            ?? throw new ClusterCatalogException(CatalogError.NotFound, $"There is no volume named '{name}': check the name (hci volume list).");

    /// <summary>Reads, changes (null: no change) and writes back a volume by compare-and-swap, retrying on races.</summary>
    private async Task<VolumeRecord> UpdateVolumeAsync(string name, Func<VolumeRecord, VolumeRecord?> change, string what, CancellationToken cancellationToken)
    {
        for (int attempt = 0; attempt < MaxAttempts; attempt++)
        {
            var (volume, revision) = await RequireVolumeAsync(name, cancellationToken).ConfigureAwait(false);
            var updated = change(volume);
            if (updated is null)
            {
                return volume;
            }

            string key = CatalogKeys.Volume(name);
            if (await Store.TryCommitAsync([new StoreCondition(key, revision)], [StoreWrite.Put(key, Serialize(updated, ClusterJsonContext.Default.VolumeRecord))], cancellationToken).ConfigureAwait(false) is not null)
            {
                return updated;
            }
        }

        throw Contention($"{what} volume '{name}'");
    }

    /// <summary>The placement over the registered nodes that are not draining, rebuilt only when a node record or a
    /// drain mark changed.</summary>
    private async Task<Placement> GetPlacementAsync(FailureDomainLevel level, CancellationToken cancellationToken)
    {
        var range = await Store.ListAsync(CatalogKeys.Nodes, cancellationToken).ConfigureAwait(false);
        var draining = await ListDrainingNodesAsync(cancellationToken).ConfigureAwait(false);
        string fingerprint = string.Join(';', range.Entries.Select(e => string.Create(CultureInfo.InvariantCulture, $"{e.Key}@{e.ModRevision}")))
            + "|" + string.Join(';', draining.Order(StringComparer.Ordinal));
        lock (_placementLock)
        {
            if (fingerprint != _placementFingerprint)
            {
                _placementFingerprint = fingerprint;
                _placements = [];
            }

            if (_placements.TryGetValue(level, out var cached))
            {
                return cached;
            }
        }

        var map = ClusterMap.FromRecords(range.Revision, range.Entries.Select(e => Deserialize(e, ClusterJsonContext.Default.NodeRecord)).Where(n => !draining.Contains(n.Id)));
        Placement placement;
        try
        {
            placement = new Placement(map, level);
        }
        catch (PlacementException ex)
        {
            throw new ClusterCatalogException(CatalogError.NoPlacement, ex.Message, ex);
        }

        lock (_placementLock)
        {
            if (fingerprint == _placementFingerprint)
            {
                _placements[level] = placement;
            }
        }

        return placement;
    }
}
