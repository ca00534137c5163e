using Hci.Core.Cluster;
using Hci.Core.Replication;

namespace Hci.Cluster.Scenarios;

// Rebalance: a node that joins placement (undrained here, as a new node would be) gets the replicas placement now
// gives it, and a drained node gives all of its replicas away and can then be removed; the client writes throughout.
public sealed partial class ClusterScenarioTests
{
    [Fact]
    public async Task ExtentsMoveToANodeThatJoinsAndOffADrainedNodeWithoutAnIoErrorAndTheDrainedNodeCanBeRemoved()
    {
        await using var cluster = await ClusterFixture.StartAsync(4);
        try
        {
            // node4 is out of placement while the volume is written: it joins later.
            await cluster.HciAsync("node", "drain", "node4");
            const long size = 32 * MiB;
            ulong id = await cluster.CreateVolumeAsync("v", size);
            string socket = await cluster.AttachAsync("v", "node1");
            var everything = PatternLoad.Range(0, size / PatternLoad.BlockSize);
            using var client = Connect(socket);
            var load = new PatternLoad(client, everything.Length);
            await load.FillAsync(everything);
            Assert.True(load.FailedWrites == 0, load.Errors);
            var before = await cluster.WaitHealthyAsync("v");
            Assert.All(before.Extents.Values, r => Assert.DoesNotContain(r, x => x.Node == "node4"));

            using var stop = new CancellationTokenSource();
            var writing = load.WriteAsync(everything, depth: 8, stop.Token);

            // node4 joins: the extents placement now gives it move there, one replica each, and nothing else moves.
            var joinedAt = cluster.Now;
            await cluster.HciAsync("node", "undrain", "node4");
            _ = await WaitForAsync(cluster, "v", s => s.Extents.Values.Count(r => r.Any(x => x.Node == "node4")) >= before.Extents.Count / 2, writing);
            var settled = await WaitStableAsync(cluster, "v", writing);
            int onNode4 = settled.Extents.Values.Count(r => r.Any(x => x.Node == "node4"));
            foreach (var (extent, replicas) in settled.Extents)
            {
                var was = before.Extents[extent].Select(r => r.Node).ToHashSet();
                Assert.True(replicas.Count(r => !was.Contains(r.Node)) <= 1, $"extent {extent}: more than one replica moved: {settled.Json}");
                Assert.Equal(3, replicas.Select(r => r.Node).Distinct().Count());
            }

            output.WriteLine($"node4 joined at {joinedAt.TotalSeconds:F1} s: {onNode4} of {settled.Extents.Count} extents moved one replica to it, settled at {cluster.Now.TotalSeconds:F1} s");
            Assert.InRange(onNode4, settled.Extents.Count / 2, settled.Extents.Count);

            // node2 holds replicas: it cannot be removed; drained, it gives them all away.
            var refused = await cluster.TryHciAsync("node", "remove", "node2");
            Assert.NotEqual(0, refused.ExitCode);
            Assert.Contains("still holds", refused.Output + refused.Error, StringComparison.Ordinal);
            await cluster.HciAsync("node", "drain", "node2");
            _ = await WaitForAsync(cluster, "v", s => s.Healthy && s.Extents.Values.All(r => r.Count == 3 && r.All(x => x.Node != "node2")), writing);
            output.WriteLine($"node2 drained at {cluster.Now.TotalSeconds:F1} s");
            var alive = await cluster.TryHciAsync("node", "remove", "node2");
            Assert.Contains("is alive", alive.Output + alive.Error, StringComparison.Ordinal);

            await stop.CancelAsync();
            await writing;
            Assert.True(load.FailedWrites == 0, $"{load.FailedWrites} writes failed: {load.Errors}\n{cluster.Tails}");
            Assert.True(await load.VerifyAsync(everything) == 0, load.Errors);

            await cluster["node2"].StopAsync();
            await cluster.HciAsync("node", "remove", "node2");
            string status = await cluster.HciAsync("cluster", "status");
            Assert.DoesNotContain(status.Split('\n'), l => l.StartsWith("node2 ", StringComparison.Ordinal));
            output.WriteLine(status);

            client.Dispose();
            var final = await cluster.VolumeStatusAsync("v");
            await StopAllAsync(cluster);
            await AssertReplicasHoldAsync(cluster, id, final, load, ["node1", "node3", "node4"]);
        }
        catch
        {
            output.WriteLine(cluster.Tails);
            throw;
        }
    }

    private static async Task<VolumeStatus> WaitForAsync(ClusterFixture cluster, string volume, Func<VolumeStatus, bool> condition, Task writing)
    {
        VolumeStatus? status = null;
        await Hci.Testing.Deadline.WaitUntilAsync(
            async () =>
            {
                status = await cluster.VolumeStatusAsync(volume);
                if (condition(status))
                {
                    return true;
                }

                Assert.False(writing.IsCompleted, "the client stopped writing");
                return false;
            },
            "the volume to get there",
            TimeSpan.FromSeconds(120),
            () => $"{status?.Json}\n{cluster.Tails}");
        return status!;
    }

    // Healthy, and nothing left to move: every extent's replica set is the one placement gives it now (what the owners'
    // rebalance check plans, asked of the same store), so the owners have no move to make. Polled, not timed.
    private static async Task<VolumeStatus> WaitStableAsync(ClusterFixture cluster, string volume, Task writing)
    {
        await using var store = await EtcdClusterStore.ConnectAsync(new EtcdClusterStoreOptions { Endpoints = [cluster.Etcd!.ClientUrl] });
        var catalog = new ClusterCatalog(store);
        VolumeStatus? status = null;
        await Hci.Testing.Deadline.WaitUntilAsync(
            async () =>
            {
                status = await WaitForAsync(cluster, volume, s => s.Healthy, writing);
                var record = (await catalog.GetVolumeAsync(volume))!;
                var planner = await catalog.GetReplacementPlannerAsync(record.DomainLevel, await catalog.ListDrainingNodesAsync(), includeDown: true);
                var extents = await catalog.GetExtentsAsync(record.Id);
                return extents.All(e => planner.Rebalance(record.Id, e.Index, record.Replicas, [.. e.Replicas.Select(r => new ReplicaTarget(r.NodeId, r.Device, r.State))]).Count == 0);
            },
            "the volume's replica sets to settle on placement",
            TimeSpan.FromSeconds(120),
            () => $"{status?.Json}\n{cluster.Tails}");
        return status!;
    }
}
