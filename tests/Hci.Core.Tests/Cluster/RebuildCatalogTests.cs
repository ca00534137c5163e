using Hci.Core.Cluster;
using Hci.Core.Replication;

namespace Hci.Core.Tests.Cluster;

/// <summary>The catalog's side of rebuild and rebalance on the local store: replica set changes, down records, drain
/// and removal of nodes, replacement and rebalance placement.</summary>
public sealed class RebuildCatalogTests : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly List<IStoreLease> _leases = [];

    public void Dispose()
    {
        foreach (var lease in _leases)
        {
            lease.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }

        _dir.Dispose();
    }

    [Fact]
    public async Task AReplicaSetChangeKeepsStoredStatesAndLetsAnInSyncReplicaLeaveOnlyOnceItsReplacementIsInSync()
    {
        await using var store = LocalClusterStore.Open(_dir.Path);
        var catalog = new ClusterCatalog(store);
        await RegisterAsync(catalog, 4, alive: 4);
        var volume = await catalog.CreateVolumeAsync("v", 64L << 20, 3);
        volume = await catalog.AttachAsync("v", "n1");
        var extent = await catalog.AllocateExtentAsync(volume, 0);
        string spare = new[] { "n1", "n2", "n3", "n4" }.Except(extent.Replicas.Select(r => r.NodeId)).Single();
        var old = extent.Replicas[2];

        // A new replica must join out of sync.
        var e = await Assert.ThrowsAsync<ClusterCatalogException>(() => catalog.SetExtentReplicasAsync("v", 0, [.. extent.Replicas, new ReplicaRecord(spare, 0, ReplicaState.InSync)], volume.Epoch));
        Assert.Equal(CatalogError.Invalid, e.Error);

        var joined = await catalog.SetExtentReplicasAsync("v", 0, [.. extent.Replicas, new ReplicaRecord(spare, 0, ReplicaState.OutOfSync)], volume.Epoch);
        Assert.Equal(volume.Epoch + 1, joined.Volume.Epoch);
        Assert.Equal(4, joined.Extent.Replicas.Count);

        // The old in-sync replica may not leave while its replacement is out of sync...
        var without = joined.Extent.Replicas.Where(r => r.NodeId != old.NodeId).ToArray();
        e = await Assert.ThrowsAsync<ClusterCatalogException>(() => catalog.SetExtentReplicasAsync("v", 0, without, joined.Volume.Epoch));
        Assert.Equal(CatalogError.Invalid, e.Error);

        // ...and may once it is in sync; a stale owner is refused.
        var marked = await catalog.MarkReplicaStateAsync("v", 0, spare, 0, ReplicaState.InSync, joined.Volume.Epoch);
        await Assert.ThrowsAsync<ClusterCatalogException>(() => catalog.SetExtentReplicasAsync("v", 0, without, volume.Epoch));
        var left = await catalog.SetExtentReplicasAsync("v", 0, without, marked.Volume.Epoch);
        Assert.Equal(3, left.Extent.Replicas.Count);
        Assert.All(left.Extent.Replicas, r => Assert.Equal(ReplicaState.InSync, r.State));
        Assert.DoesNotContain(left.Extent.Replicas, r => r.NodeId == old.NodeId);
        Assert.Equal(left.Extent.Replicas, (await catalog.GetExtentAsync(volume.Id, 0))!.Replicas);
    }

    [Fact]
    public async Task ADownNodeIsRecordedOnceWithItsRebuildTimeAndForgottenWhenItIsBack()
    {
        await using var store = LocalClusterStore.Open(_dir.Path);
        var catalog = new ClusterCatalog(store);
        await RegisterAsync(catalog, 3, alive: 2);

        var first = await catalog.UpdateDownNodesAsync(TimeSpan.FromMinutes(10));
        var down = Assert.Single(first);
        Assert.Equal("n3", down.Key);
        Assert.Equal(TimeSpan.FromMinutes(10), down.Value.RebuildAt - down.Value.Since);

        // Another node with another interval sees the same record: every node counts down to the same moment.
        var second = await catalog.UpdateDownNodesAsync(TimeSpan.FromSeconds(5));
        Assert.Equal(down.Value, second["n3"]);
        Assert.Equal(down.Value, (await catalog.ListDownNodesAsync())["n3"]);

        await SetAliveAsync(catalog, "n3");
        Assert.Empty(await catalog.UpdateDownNodesAsync(TimeSpan.FromMinutes(10)));
        Assert.Empty(await catalog.ListDownNodesAsync());
    }

    [Theory]
    [InlineData("{\"since\":\"2026-12-01T00:00:00+00:00\",\"rebuildAfterSeconds\":-1}")]
    [InlineData("{\"since\":\"2026-12-01T00:00:00+00:00\",\"rebuildAfterSeconds\":1e300}")]
    [InlineData("{\"since\":\"9999-12-31T00:00:00+00:00\",\"rebuildAfterSeconds\":600}")]
    public async Task ADownRecordOutOfRangeInTheStoreIsRefusedAsCorruptNotThrownOnByEveryReader(string json)
    {
        await using var store = LocalClusterStore.Open(_dir.Path);
        var catalog = new ClusterCatalog(store);
        await store.TryCommitAsync([], [StoreWrite.Put("hci/down/n9", System.Text.Encoding.UTF8.GetBytes(json))]);

        var ex = await Assert.ThrowsAsync<ClusterCatalogException>(() => catalog.ListDownNodesAsync());
        Assert.Equal(CatalogError.Corrupt, ex.Error);
        Assert.Contains("hci/down/n9", ex.Message);
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => catalog.UpdateDownNodesAsync(TimeSpan.FromDays(4000)));
    }

    [Fact]
    public async Task AReplacementGoesWherePlacementPrefersAmongTheLiveNodesInAFreeDomain()
    {
        await using var store = LocalClusterStore.Open(_dir.Path);
        var catalog = new ClusterCatalog(store);
        await RegisterAsync(catalog, 5, alive: 5);
        var volume = await catalog.CreateVolumeAsync("v", 256L << 20, 3);
        for (long i = 0; i < 64; i++)
        {
            var extent = await catalog.AllocateExtentAsync(volume, i);
            var lost = extent.Replicas[1].NodeId;
            var planner = await catalog.GetReplacementPlannerAsync(FailureDomainLevel.Host, new HashSet<string> { lost });
            var keep = extent.Replicas.Where(r => r.NodeId != lost).Select(r => new ReplicaTarget(r.NodeId, r.Device, r.State)).ToList();
            var chosen = planner.Choose(volume.Id, i, 3, keep);
            Assert.NotNull(chosen);
            Assert.NotEqual(lost, chosen.NodeId);
            Assert.DoesNotContain(keep, k => k.NodeId == chosen.NodeId);

            // It is the device placement over the map without the lost node gives the extent.
            var without = planner.Live.Place(volume.Id, i, 3);
            Assert.Contains(without, d => d.NodeId == chosen.NodeId);
        }
    }

    [Fact]
    public async Task ANodeThatJoinsGetsOnlyTheReplicasPlacementNowGivesIt()
    {
        await using var store = LocalClusterStore.Open(_dir.Path);
        var catalog = new ClusterCatalog(store);
        await RegisterAsync(catalog, 4, alive: 4);
        var volume = await catalog.CreateVolumeAsync("v", 1L << 30, 3);
        var extents = new List<ExtentRecord>();
        for (long i = 0; i < 200; i++)
        {
            extents.Add(await catalog.AllocateExtentAsync(volume, i));
        }

        var steady = await catalog.GetReplacementPlannerAsync(FailureDomainLevel.Host, new HashSet<string>(), includeDown: true);
        Assert.All(extents, e => Assert.Empty(steady.Rebalance(volume.Id, e.Index, 3, Targets(e))));

        await RegisterAsync(catalog, 5, alive: 5, from: 5);
        var grown = await catalog.GetReplacementPlannerAsync(FailureDomainLevel.Host, new HashSet<string>(), includeDown: true);
        int moved = 0;
        foreach (var e in extents)
        {
            var moves = grown.Rebalance(volume.Id, e.Index, 3, Targets(e));
            Assert.All(moves, m => Assert.Equal("n5", m.To.NodeId));
            Assert.True(moves.Count <= 1);
            moved += moves.Count;
        }

        // Equal weights: the new node wins about 3/5 of the extents once each (3 of 5 domains per extent).
        Assert.InRange(moved, 200 * 3 / 5 * 0.7, 200 * 3 / 5 * 1.3);
    }

    [Fact]
    public async Task ADrainingNodeTakesNoNewExtentAndCannotBeRemovedWhileItHoldsReplicas()
    {
        await using var store = LocalClusterStore.Open(_dir.Path);
        var catalog = new ClusterCatalog(store);
        await RegisterAsync(catalog, 4, alive: 3);
        var volume = await catalog.CreateVolumeAsync("v", 1L << 30, 3);
        var first = await catalog.AllocateExtentAsync(volume, 0);
        string holder = first.Replicas[0].NodeId;

        await catalog.SetNodeDrainingAsync("n4", true);
        Assert.Contains("n4", await catalog.ListDrainingNodesAsync());
        for (long i = 1; i < 40; i++)
        {
            Assert.DoesNotContain((await catalog.AllocateExtentAsync(volume, i)).Replicas, r => r.NodeId == "n4");
        }

        var e = await Assert.ThrowsAsync<ClusterCatalogException>(() => catalog.RemoveNodeAsync(holder));
        Assert.Contains("still holds", e.Message, StringComparison.Ordinal);
        Assert.Contains($"hci node drain {holder}", e.Message, StringComparison.Ordinal);

        // n4 is down (no alive key); if it holds nothing it can go.
        if ((await catalog.CountReplicasOnAsync("n4")).Count == 0)
        {
            await catalog.RemoveNodeAsync("n4");
            Assert.DoesNotContain((await catalog.ListNodesAsync()), n => n.Id == "n4");
            Assert.Empty(await catalog.ListDrainingNodesAsync());
        }

        // A node that holds nothing but is alive is refused too: its host would register it again.
        await RegisterAsync(catalog, 5, alive: 5, from: 5);
        var alive = await Assert.ThrowsAsync<ClusterCatalogException>(() => catalog.RemoveNodeAsync("n5"));
        Assert.Contains("is alive", alive.Message, StringComparison.Ordinal);
    }

    private static ReplicaTarget[] Targets(ExtentRecord e) => [.. e.Replicas.Select(r => new ReplicaTarget(r.NodeId, r.Device, r.State))];

    private async Task RegisterAsync(ClusterCatalog catalog, int nodes, int alive, int from = 1)
    {
        for (int i = from; i <= nodes; i++)
        {
            await catalog.RegisterNodeAsync(new NodeRecord { Id = $"n{i}", Address = $"127.0.0.1:{7400 + i}", Domain = $"host{i}", Devices = [new DeviceRecord { Index = 0, Capacity = 1L << 40, Weight = 1 }] });
            if (i <= alive)
            {
                await SetAliveAsync(catalog, $"n{i}");
            }
        }
    }

    private async Task SetAliveAsync(ClusterCatalog catalog, string node)
    {
        var lease = await catalog.Store.GrantLeaseAsync(TimeSpan.FromMinutes(5));
        _leases.Add(lease);
        await catalog.SetAliveAsync(node, lease);
    }
}
