using Hci.Core.Cluster;
using Xunit;

namespace Hci.Testing;

/// <summary>
/// The contract of <see cref="ClusterCatalog"/> over an <see cref="IClusterStore"/>: volumes with unique names and
/// ids, ownership by compare-and-swap with epochs, thin extents placed once, replica states with the epoch rule.
/// It runs over every store (the local one, etcd); each test opens a fresh, empty store.
/// </summary>
public abstract class ClusterCatalogContract
{
    /// <summary>Opens an empty store for one test; the test disposes it.</summary>
    /// <returns>The store.</returns>
    protected abstract ValueTask<IClusterStore> OpenEmptyStoreAsync();

    /// <summary>Registers <paramref name="nodes"/> nodes (n1, n2, ...) in domains host1, host2, ..., each with two devices.</summary>
    protected static async Task RegisterNodesAsync(ClusterCatalog catalog, int nodes)
    {
        for (int i = 1; i <= nodes; i++)
        {
            await catalog.RegisterNodeAsync(new NodeRecord
            {
                Id = $"n{i}",
                Address = $"127.0.0.1:{7400 + i}",
                Domain = $"host{i}",
                Devices = [new DeviceRecord { Index = 0, Capacity = 1L << 40, Weight = 1 }, new DeviceRecord { Index = 1, Capacity = 1L << 40, Weight = 1 }],
            });
        }
    }

    [Fact]
    public async Task VolumesGetDistinctIdsAndADuplicateNameIsRefused()
    {
        await using var store = await OpenEmptyStoreAsync();
        var catalog = new ClusterCatalog(store);
        await RegisterNodesAsync(catalog, 3);
        var a = await catalog.CreateVolumeAsync("a", 1L << 30, 3);
        var b = await catalog.CreateVolumeAsync("b", 1L << 30, 2);
        Assert.NotEqual(a.Id, b.Id);
        Assert.Equal(2, a.MinInSync);
        Assert.Equal(1, b.MinInSync);
        Assert.Equal(256, a.ExtentCount);
        var ex = await Assert.ThrowsAsync<ClusterCatalogException>(() => catalog.CreateVolumeAsync("a", 4096, 3));
        Assert.Equal(CatalogError.AlreadyExists, ex.Error);
        Assert.Contains("exists already", ex.Message);
        Assert.Equal(["a", "b"], (await catalog.ListVolumesAsync()).Select(v => v.Name));
        Assert.Equal(a, await catalog.GetVolumeAsync("a"));
        Assert.Null(await catalog.GetVolumeAsync("c"));
    }

    [Fact]
    public async Task ConcurrentCreatesOfOneNameLeaveExactlyOneVolume()
    {
        await using var store = await OpenEmptyStoreAsync();
        var catalog = new ClusterCatalog(store);
        await RegisterNodesAsync(catalog, 3);
        var results = await Task.WhenAll(Enumerable.Range(0, 8).Select(i => Task.Run(async () =>
        {
            try
            {
                return await catalog.CreateVolumeAsync(i % 2 == 0 ? "same" : $"other{i}", 1L << 20, 3);
            }
            catch (ClusterCatalogException ex) when (ex.Error == CatalogError.AlreadyExists)
            {
                return null;
            }
        })));
        Assert.Single(results, v => v?.Name == "same");
        var ids = (await catalog.ListVolumesAsync()).Select(v => v.Id).ToArray();
        Assert.Equal(5, ids.Length);
        Assert.Equal(ids.Length, ids.Distinct().Count());
    }

    [Theory]
    [InlineData("Bad", 4096, 3, "not a valid volume name")]
    [InlineData("-x", 4096, 3, "not a valid volume name")]
    [InlineData("ok", 1000, 3, "multiple of 4 KiB")]
    [InlineData("ok", 4096, 0, "1 to 16")]
    [InlineData("ok", 4096, 4, "4 replicas need 4 failure domains at level host")]
    public async Task InvalidVolumesAreRefusedWithAMessageThatSaysWhatToFix(string name, long size, int replicas, string message)
    {
        await using var store = await OpenEmptyStoreAsync();
        var catalog = new ClusterCatalog(store);
        await RegisterNodesAsync(catalog, 3);
        var ex = await Assert.ThrowsAsync<ClusterCatalogException>(() => catalog.CreateVolumeAsync(name, size, replicas));
        Assert.Contains(message, ex.Message);
    }

    [Fact]
    public async Task ACreateWithoutDevicesSaysThatPlacementNeedsThem()
    {
        await using var store = await OpenEmptyStoreAsync();
        var catalog = new ClusterCatalog(store);
        var ex = await Assert.ThrowsAsync<ClusterCatalogException>(() => catalog.CreateVolumeAsync("v", 1L << 30, 3));
        Assert.Equal(CatalogError.NoPlacement, ex.Error);
        Assert.Contains("placement needs devices", ex.Message);
    }

    [Fact]
    public async Task AttachTakesANewEpochAndRefusesASecondOwnerWhileTheFirstIsAliveUnlessForced()
    {
        await using var store = await OpenEmptyStoreAsync();
        var catalog = new ClusterCatalog(store);
        await RegisterNodesAsync(catalog, 3);
        await using var alive = await store.GrantLeaseAsync(TimeSpan.FromSeconds(30));
        await catalog.SetAliveAsync("n1", alive);
        var volume = await catalog.CreateVolumeAsync("v", 1L << 30, 3);
        var first = await catalog.AttachAsync("v", "n1");
        Assert.Equal("n1", first.Owner);
        Assert.Equal(volume.Epoch + 1, first.Epoch);

        var again = await catalog.AttachAsync("v", "n1"); // the owner restarted: a new epoch fences its old self
        Assert.Equal(first.Epoch + 1, again.Epoch);

        var ex = await Assert.ThrowsAsync<ClusterCatalogException>(() => catalog.AttachAsync("v", "n2"));
        Assert.Equal(CatalogError.Owned, ex.Error);
        Assert.Contains("attached to node 'n1', which is alive", ex.Message);
        Assert.Contains("--force", ex.Message);
        Assert.Equal(again, await catalog.GetVolumeAsync("v"));

        var forced = await catalog.AttachAsync("v", "n2", force: true);
        Assert.Equal("n2", forced.Owner);
        Assert.Equal(again.Epoch + 1, forced.Epoch);

        ex = await Assert.ThrowsAsync<ClusterCatalogException>(() => catalog.AttachAsync("v", "n9"));
        Assert.Equal(CatalogError.NotFound, ex.Error);
    }

    [Fact]
    public async Task AVolumeWhoseOwnerIsDownMovesWithoutForceAndAnOwnerThatCameBackKeepsIt()
    {
        await using var store = await OpenEmptyStoreAsync();
        var catalog = new ClusterCatalog(store);
        await RegisterNodesAsync(catalog, 3);
        await catalog.CreateVolumeAsync("v", 1L << 30, 3);
        var lease = await store.GrantLeaseAsync(TimeSpan.FromSeconds(30));
        await catalog.SetAliveAsync("n1", lease);
        var first = await catalog.AttachAsync("v", "n1");

        // n1's lease ends (revoked here; lapsed when a node dies): n1 is down, and n2 takes the volume as it is.
        await lease.DisposeAsync();
        await Deadline.WaitUntilAsync(() => !catalog.GetMapAsync().Result.FindNode("n1")!.Alive, "n1 to be down once its lease is gone");
        var moved = await catalog.AttachAsync("v", "n2");
        Assert.Equal("n2", moved.Owner);
        Assert.Equal(first.Epoch + 1, moved.Epoch);

        // n2 is alive now: n3 may not take it without --force.
        await using var second = await store.GrantLeaseAsync(TimeSpan.FromSeconds(30));
        await catalog.SetAliveAsync("n2", second);
        var ex = await Assert.ThrowsAsync<ClusterCatalogException>(() => catalog.AttachAsync("v", "n3"));
        Assert.Equal(CatalogError.Owned, ex.Error);
        Assert.Equal(moved, await catalog.GetVolumeAsync("v"));
    }

    [Fact]
    public async Task ConcurrentAttachesLeaveOneOwnerAndDistinctEpochs()
    {
        await using var store = await OpenEmptyStoreAsync();
        var catalog = new ClusterCatalog(store);
        await RegisterNodesAsync(catalog, 3);
        await using var alive = await store.GrantLeaseAsync(TimeSpan.FromSeconds(30));
        foreach (var node in new[] { "n1", "n2", "n3" })
        {
            await catalog.SetAliveAsync(node, alive);
        }

        await catalog.CreateVolumeAsync("v", 1L << 30, 3);
        var outcomes = await Task.WhenAll(new[] { "n1", "n2", "n3" }.Select(node => Task.Run(async () =>
        {
            try
            {
                return await catalog.AttachAsync("v", node);
            }
            catch (ClusterCatalogException ex) when (ex.Error == CatalogError.Owned)
            {
                return null;
            }
        })));
        var winner = Assert.Single(outcomes, o => o is not null);
        Assert.Equal(winner, await catalog.GetVolumeAsync("v"));
    }

    [Fact]
    public async Task ADeletedVolumesRebuildAndScrubRecordsGoWithItAndANewVolumeOfItsNameStartsWithNone()
    {
        await using var store = await OpenEmptyStoreAsync();
        var catalog = new ClusterCatalog(store);
        await RegisterNodesAsync(catalog, 3);
        await catalog.CreateVolumeAsync("v", 64L << 20, 3);
        await catalog.CreateVolumeAsync("w", 64L << 20, 3);
        foreach (var name in new[] { "v", "w" })
        {
            await catalog.AttachAsync(name, "n1");
            await catalog.RequestScrubAsync(name);
            await catalog.PutRebuildProgressAsync(new RebuildProgress { Volume = name, Owner = "n1", ExtentsTotal = 4, ExtentsDone = 2 });
        }

        await catalog.DetachAsync("v");
        await catalog.DeleteVolumeAsync("v");
        Assert.Null(await catalog.GetScrubAsync("v"));
        Assert.Equal(["w"], (await catalog.ListRebuildProgressAsync()).Select(p => p.Volume).ToArray());
        Assert.Equal(["w"], (await catalog.ListScrubsAsync()).Select(s => s.Volume).ToArray());

        // A volume that never had either is deleted as well.
        await catalog.CreateVolumeAsync("v", 64L << 20, 3);
        Assert.Null(await catalog.GetScrubAsync("v"));
        await catalog.DeleteVolumeAsync("v");
        Assert.Null(await catalog.GetVolumeAsync("v"));
    }

    [Fact]
    public async Task DetachAdvancesTheEpochAndDeleteNeedsADetachedVolume()
    {
        await using var store = await OpenEmptyStoreAsync();
        var catalog = new ClusterCatalog(store);
        await RegisterNodesAsync(catalog, 3);
        var volume = await catalog.CreateVolumeAsync("v", 64L << 20, 3);
        await catalog.AllocateExtentAsync(volume, 0);
        await catalog.AllocateExtentAsync(volume, 5);
        var attached = await catalog.AttachAsync("v", "n1");
        var ex = await Assert.ThrowsAsync<ClusterCatalogException>(() => catalog.DeleteVolumeAsync("v"));
        Assert.Equal(CatalogError.Attached, ex.Error);
        Assert.Contains("detach it first", ex.Message);

        var detached = await catalog.DetachAsync("v");
        Assert.Null(detached.Owner);
        Assert.Equal(attached.Epoch + 1, detached.Epoch);
        await catalog.DeleteVolumeAsync("v");
        Assert.Null(await catalog.GetVolumeAsync("v"));
        Assert.Empty(await catalog.GetExtentsAsync(volume.Id));

        // The name is free again, with a new id: records of the old volume can never be mistaken for the new one's.
        var reborn = await catalog.CreateVolumeAsync("v", 64L << 20, 3);
        Assert.NotEqual(volume.Id, reborn.Id);
        ex = await Assert.ThrowsAsync<ClusterCatalogException>(() => catalog.DeleteVolumeAsync("nothing"));
        Assert.Equal(CatalogError.NotFound, ex.Error);
    }

    [Fact]
    public async Task ResizeGrowsAndRefusesToShrink()
    {
        await using var store = await OpenEmptyStoreAsync();
        var catalog = new ClusterCatalog(store);
        await RegisterNodesAsync(catalog, 3);
        await catalog.CreateVolumeAsync("v", 1L << 30, 3);
        var grown = await catalog.ResizeVolumeAsync("v", 2L << 30);
        Assert.Equal(2L << 30, grown.Size);
        Assert.Equal(512, grown.ExtentCount);
        var ex = await Assert.ThrowsAsync<ClusterCatalogException>(() => catalog.ResizeVolumeAsync("v", 1L << 30));
        Assert.Contains("volumes only grow", ex.Message);
        Assert.Equal(2L << 30, (await catalog.GetVolumeAsync("v"))!.Size);
    }

    [Fact]
    public async Task AnExtentIsPlacedOnceInSyncAndASecondAllocationReturnsTheFirst()
    {
        await using var store = await OpenEmptyStoreAsync();
        var catalog = new ClusterCatalog(store);
        await RegisterNodesAsync(catalog, 4);
        var volume = await catalog.CreateVolumeAsync("v", 1L << 30, 3);
        var extent = await catalog.AllocateExtentAsync(volume, 7);
        Assert.Equal(7, extent.Index);
        Assert.Equal(3, extent.Replicas.Count);
        Assert.Equal(3, extent.Replicas.Select(r => r.NodeId).Distinct().Count());
        Assert.All(extent.Replicas, r => Assert.Equal(ReplicaState.InSync, r.State));

        // Even after the map changes, the recorded replica set stands.
        await RegisterNodesAsync(catalog, 6);
        var again = await catalog.AllocateExtentAsync(volume, 7);
        Assert.Equal(extent.Replicas, again.Replicas);

        var racing = await Task.WhenAll(Enumerable.Range(0, 6).Select(_ => Task.Run(() => catalog.AllocateExtentAsync(volume, 9))));
        Assert.All(racing, r => Assert.Equal(racing[0].Replicas, r.Replicas));
        Assert.Equal([7L, 9L], (await catalog.GetExtentsAsync(volume.Id)).Select(e => e.Index));

        var ex = await Assert.ThrowsAsync<ClusterCatalogException>(() => catalog.AllocateExtentAsync(volume, volume.ExtentCount));
        Assert.Equal(CatalogError.Invalid, ex.Error);
    }

    [Fact]
    public async Task MarkingAReplicaOutOfSyncAdvancesTheEpochInTheSameTransaction()
    {
        await using var store = await OpenEmptyStoreAsync();
        var catalog = new ClusterCatalog(store);
        await RegisterNodesAsync(catalog, 3);
        await catalog.CreateVolumeAsync("v", 1L << 30, 3);
        var volume = await catalog.AttachAsync("v", "n1");
        var extent = await catalog.AllocateExtentAsync(volume, 0);
        var replica = extent.Replicas[1];

        var change = await catalog.MarkReplicaStateAsync("v", 0, replica.NodeId, replica.Device, ReplicaState.OutOfSync, volume.Epoch);
        Assert.Equal(volume.Epoch + 1, change.Volume.Epoch);
        Assert.Equal(ReplicaState.OutOfSync, change.Extent.Replicas[1].State);
        Assert.False(change.Extent.Healthy);
        Assert.Equal(change.Volume, await catalog.GetVolumeAsync("v"));
        Assert.Equal(change.Extent, await catalog.GetExtentAsync(volume.Id, 0), new ExtentComparer());

        // The old epoch is refused: a replaced owner cannot change replica states.
        var ex = await Assert.ThrowsAsync<ClusterCatalogException>(() => catalog.MarkReplicaStateAsync("v", 0, replica.NodeId, replica.Device, ReplicaState.InSync, volume.Epoch));
        Assert.Equal(CatalogError.StaleEpoch, ex.Error);

        // Resyncing and back in sync keep the epoch.
        var resyncing = await catalog.MarkReplicaStateAsync("v", 0, replica.NodeId, replica.Device, ReplicaState.Resyncing, change.Volume.Epoch);
        var inSync = await catalog.MarkReplicaStateAsync("v", 0, replica.NodeId, replica.Device, ReplicaState.InSync, resyncing.Volume.Epoch);
        Assert.Equal(change.Volume.Epoch, inSync.Volume.Epoch);
        Assert.True(inSync.Extent.Healthy);

        ex = await Assert.ThrowsAsync<ClusterCatalogException>(() => catalog.MarkReplicaStateAsync("v", 0, "n9", 0, ReplicaState.OutOfSync, inSync.Volume.Epoch));
        Assert.Equal(CatalogError.NotFound, ex.Error);
    }

    [Fact]
    public async Task ConcurrentMarksOfTwoReplicasOfOneExtentBothLand()
    {
        await using var store = await OpenEmptyStoreAsync();
        var catalog = new ClusterCatalog(store);
        await RegisterNodesAsync(catalog, 3);
        await catalog.CreateVolumeAsync("v", 1L << 30, 3, minInSync: 1);
        var volume = await catalog.AttachAsync("v", "n1");
        var extent = await catalog.AllocateExtentAsync(volume, 0);

        // Both marks carry the owner's epoch; the second to commit sees the first's epoch + 1 and is refused: the owner
        // learns of the change and retries with the new epoch, as the replication logic does.
        var tasks = extent.Replicas.Skip(1).Select(r => Task.Run(async () =>
        {
            ulong epoch = volume.Epoch;
            while (true)
            {
                try
                {
                    return await catalog.MarkReplicaStateAsync("v", 0, r.NodeId, r.Device, ReplicaState.OutOfSync, epoch);
                }
                catch (ClusterCatalogException ex) when (ex.Error == CatalogError.StaleEpoch)
                {
                    epoch = (await catalog.GetVolumeAsync("v"))!.Epoch;
                }
            }
        })).ToArray();
        await Task.WhenAll(tasks);
        var final = (await catalog.GetExtentAsync(volume.Id, 0))!;
        Assert.Equal(1, final.InSyncCount);
        Assert.Equal(volume.Epoch + 2, (await catalog.GetVolumeAsync("v"))!.Epoch);
    }

    [Fact]
    public async Task TheMapShowsRegisteredNodesAndWhichAreAlive()
    {
        await using var store = await OpenEmptyStoreAsync();
        var catalog = new ClusterCatalog(store);
        await RegisterNodesAsync(catalog, 3);
        var lease = await store.GrantLeaseAsync(TimeSpan.FromSeconds(10));
        await catalog.SetAliveAsync("n2", lease);
        var map = await catalog.GetMapAsync();
        Assert.Equal(["n1", "n2", "n3"], map.Nodes.Select(n => n.Id));
        Assert.Equal([false, true, false], map.Nodes.Select(n => n.Alive));
        Assert.Equal(6, map.Devices.Count);
        Assert.Equal("host2", map.FindNode("n2")!.Domain);

        await lease.DisposeAsync();
        await Deadline.WaitUntilAsync(() => !catalog.GetMapAsync().Result.FindNode("n2")!.Alive, "n2 to be down once its lease is revoked");

        var ex = await Assert.ThrowsAsync<ClusterCatalogException>(() => catalog.RegisterNodeAsync(new NodeRecord { Id = "n/1", Address = "x:1" }));
        Assert.Contains("not a valid node id", ex.Message);
        ex = await Assert.ThrowsAsync<ClusterCatalogException>(() => catalog.RegisterNodeAsync(new NodeRecord { Id = "n4", Address = "nohost" }));
        Assert.Contains("host:port", ex.Message);
    }

    [Fact]
    public async Task AVolumeWatchSeesCreateAttachAndDeleteInOrder()
    {
        await using var store = await OpenEmptyStoreAsync();
        var catalog = new ClusterCatalog(store);
        await RegisterNodesAsync(catalog, 3);
        var (_, revision) = await catalog.ListVolumesWithRevisionAsync();
        await catalog.CreateVolumeAsync("v", 1L << 30, 3);
        await catalog.AttachAsync("v", "n1");
        await catalog.DetachAsync("v");
        await catalog.DeleteVolumeAsync("v");

        using var cancel = new CancellationTokenSource(Deadline.Default);
        var seen = new List<VolumeChange>();
        await foreach (var change in catalog.WatchVolumesAsync(revision, cancel.Token))
        {
            seen.Add(change);
            if (seen.Count == 4)
            {
                break;
            }
        }

        Assert.Equal(["v", "v", "v", "v"], seen.Select(c => c.Name));
        Assert.Equal(new string?[] { null, "n1", null }, seen.Take(3).Select(c => c.Volume!.Owner));
        Assert.Null(seen[3].Volume);
        Assert.True(seen.Zip(seen.Skip(1)).All(p => p.First.Revision < p.Second.Revision));
    }

    private sealed class ExtentComparer : IEqualityComparer<ExtentRecord?>
    {
        public bool Equals(ExtentRecord? x, ExtentRecord? y) => x is not null && y is not null && x.Index == y.Index && x.Replicas.SequenceEqual(y.Replicas);

        public int GetHashCode(ExtentRecord? obj) => obj?.Index.GetHashCode() ?? 0;
    }
}
