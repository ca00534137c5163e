using System.Diagnostics;
using Hci.Core.Replication;

namespace Hci.Cluster.Scenarios;

/// <summary>
/// Network partitions and etcd member failures on a cluster of real processes: three nodes and a three-member etcd,
/// each in a network namespace of its own (<see cref="NetworkNamespaces"/>), links cut with nftables drop rules; the
/// client writes through the owner's vhost-user socket (a Unix socket, reachable from the test's namespace whatever
/// the cuts).
/// </summary>
public sealed partial class ClusterScenarioTests
{
    /// <summary>How long a node's membership lease lives in etcd (samples/Shared/ClusterNode.cs).</summary>
    private static readonly TimeSpan MembershipLease = TimeSpan.FromSeconds(10);

    /// <summary>The deadline of a wait that spans a replica request timeout (10 s) and a lease (10 s) on a loaded machine.</summary>
    private static readonly TimeSpan FaultDeadline = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task AReplicaNodeCutFromTheOtherNodesIsMarkedOutOfSyncWithoutAFailedWriteAndResyncedAfterHealing()
    {
        await using var cluster = await ClusterFixture.StartAsync(new ClusterFixtureOptions());
        var network = cluster.Network!;
        try
        {
            const long size = 16 * MiB;
            ulong id = await cluster.CreateVolumeAsync("v", size);
            string socket = await cluster.AttachAsync("v", "node1");
            var everything = PatternLoad.Range(0, size / PatternLoad.BlockSize);
            var owner = cluster["node1"];
            using var client = Connect(socket);
            var load = new PatternLoad(client, everything.Length);
            await load.FillAsync(everything);
            Assert.True(load.FailedWrites == 0, load.Errors);
            await cluster.WaitHealthyAsync("v");

            using var stop = new CancellationTokenSource();
            var writing = load.WriteAsync(everything, depth: 16, stop.Token);
            long before = load.Writes;
            await Deadline.WaitUntilAsync(() => load.Writes > before + 300 || writing.IsCompleted, "the client to write at depth");

            // node3 loses both other nodes but keeps etcd: it stays registered (alive), only unreachable for replication.
            int mark = owner.LineCount;
            network.Cut("node3", "node1");
            network.Cut("node3", "node2");
            var cutAt = cluster.Now;
            long atCut = load.Writes;
            var marked = await owner.WaitForLineAsync(l => l.Contains("replica on node3/0 is now OutOfSync", StringComparison.Ordinal), "the owner to mark node3's replica out of sync", mark, FaultDeadline);
            long atMark = load.Writes;
            await Deadline.WaitUntilAsync(() => load.Writes > atMark + 2000 || writing.IsCompleted, "2000 writes after node3 was marked out of sync", FaultDeadline);
            var degraded = await cluster.VolumeStatusAsync("v");
            Assert.False(degraded.Healthy, degraded.Json);
            Assert.Contains(degraded.Extents.Values, replicas => replicas.Any(r => r.Node == "node3" && r.State == "out-of-sync"));
            Assert.All(degraded.Extents.Values, replicas => Assert.All(replicas.Where(r => r.Node != "node3"), r => Assert.Equal("in-sync", r.State)));
            var alive = await cluster.NodesAliveAsync();
            Assert.True(alive.Values.All(a => a), $"a node lost its membership while only node-to-node links were cut: {string.Join(", ", alive)}");

            network.HealAll();
            var healedAt = cluster.Now;
            long atHeal = load.Writes;
            var healthy = await cluster.WaitHealthyAsync("v", FaultDeadline);
            var healthyAt = cluster.Now;
            await Deadline.WaitUntilAsync(() => load.Writes > atHeal + 1000 || writing.IsCompleted, "1000 writes after healing");
            await stop.CancelAsync();
            await writing;
            output.WriteLine($"cut node3 from node1 and node2 at {cutAt.TotalSeconds:F1} s after {atCut} writes; the owner marked it out of sync {(marked.At - cutAt).TotalSeconds:F1} s later ({atMark - atCut} writes meanwhile): {marked.Text}");
            output.WriteLine($"healed at {healedAt.TotalSeconds:F1} s; volume healthy {(healthyAt - healedAt).TotalSeconds:F1} s later; {load.Writes} writes, {load.FailedWrites} failed");
            output.WriteLine(string.Join('\n', owner.LinesContaining("resynced extent", mark).Select(l => l.Text)));
            Assert.True(load.FailedWrites == 0, $"{load.FailedWrites} writes failed: {load.Errors}\n{cluster.Tails}");
            Assert.Contains(owner.LinesContaining("resynced extent", mark), l => l.Text.Contains(" to node3/0:", StringComparison.Ordinal));

            Assert.True(await load.VerifyAsync(everything) == 0, load.Errors);
            await StopAllAsync(cluster);
            await AssertReplicasHoldAsync(cluster, id, healthy, load, ["node1", "node2", "node3"]);
        }
        catch
        {
            output.WriteLine($"network: {network.Describe()}\n{cluster.Tails}");
            throw;
        }
    }

    [Fact]
    public async Task TheEtcdLeaderKilledAndRestartedUnderWritesCostsNoWriteNoMembershipAndNoAttach()
    {
        // On 127.0.0.1 (no namespaces): the three-member etcd alone is under test here.
        await using var cluster = await ClusterFixture.StartAsync(new ClusterFixtureOptions { NetworkNamespaces = false });
        var etcd = cluster.EtcdCluster!;
        try
        {
            const long size = 8 * MiB;
            ulong id = await cluster.CreateVolumeAsync("v", size);
            await cluster.CreateVolumeAsync("w", 4 * MiB);
            string socket = await cluster.AttachAsync("v", "node1");
            var everything = PatternLoad.Range(0, size / PatternLoad.BlockSize);
            var nodes = cluster.Nodes.ToDictionary(n => n.Id, n => n.LineCount);
            using var client = Connect(socket);
            var load = new PatternLoad(client, everything.Length);
            await load.FillAsync(everything);
            Assert.True(load.FailedWrites == 0, load.Errors);
            await cluster.WaitHealthyAsync("v");

            using var stop = new CancellationTokenSource();
            var writing = load.WriteAsync(everything, depth: 16, stop.Token);
            long before = load.Writes;
            await Deadline.WaitUntilAsync(() => load.Writes > before + 300 || writing.IsCompleted, "the client to write at depth");

            var leader = await etcd.LeaderAsync();
            leader.Kill();
            var killedAt = cluster.Now;
            long atKill = load.Writes;

            // While the leader is away: a new leader is elected, an attach works, and the nodes keep their membership
            // for longer than a lease (keepalives go to the members left).
            var attached = Stopwatch.StartNew();
            await cluster.AttachAsync("w", "node2");
            attached.Stop();
            var writesDuringOutage = load.Writes - atKill;
            await Deadline.WaitUntilAsync(() => cluster.Now - killedAt > MembershipLease + TimeSpan.FromSeconds(2) || writing.IsCompleted, "a lease's time without the old leader");
            var alive = await cluster.NodesAliveAsync();
            Assert.True(alive.Count == 3 && alive.Values.All(a => a), $"nodes alive while {leader.Name} was down: {string.Join(", ", alive)}");
            var newLeader = await etcd.LeaderAsync();
            long atRestart = load.Writes;

            await leader.RestartAsync();
            var restartedAt = cluster.Now;
            await Deadline.WaitUntilAsync(() => load.Writes > atRestart + 1000 || writing.IsCompleted, "1000 writes after the restart");
            await stop.CancelAsync();
            await writing;
            alive = await cluster.NodesAliveAsync();
            output.WriteLine($"killed the etcd leader {leader.Name} at {killedAt.TotalSeconds:F1} s; {newLeader.Name} led meanwhile; the attach of w to node2 took {attached.ElapsedMilliseconds} ms; {writesDuringOutage} writes during the attach, {atRestart - atKill} before the restart at {restartedAt.TotalSeconds:F1} s ({(restartedAt - killedAt).TotalSeconds:F1} s down)");
            output.WriteLine($"{load.Writes} writes, {load.FailedWrites} failed; nodes alive after: {string.Join(", ", alive)}");
            Assert.True(load.FailedWrites == 0, $"{load.FailedWrites} writes failed: {load.Errors}\n{cluster.Tails}");
            Assert.True(alive.Values.All(a => a), string.Join(", ", alive));
            foreach (var node in cluster.Nodes)
            {
                var lost = node.LinesContaining("membership lease lost", nodes[node.Id]);
                Assert.True(lost.Count == 0, $"{node.Id}: {string.Join('\n', lost.Select(l => l.Text))}");
            }

            Assert.True(await load.VerifyAsync(everything) == 0, load.Errors);
            var status = await cluster.VolumeStatusAsync("v");
            Assert.True(status.Healthy, status.Json);
            await StopAllAsync(cluster);
            await AssertReplicasHoldAsync(cluster, id, status, load, ["node1", "node2", "node3"]);
        }
        catch
        {
            output.WriteLine(string.Join('\n', etcd.Members.Select(m => $"--- {m.Name} ({(m.IsRunning ? "running" : "down")}) ---\n{m.Output}")));
            output.WriteLine(cluster.Tails);
            throw;
        }
    }

    [Fact]
    public async Task AnOwnerCutFromEveryoneStopsAcknowledgingAndTheMajoritySideServesWithoutDivergingReplicas()
    {
        await using var cluster = await ClusterFixture.StartAsync(new ClusterFixtureOptions());
        var network = cluster.Network!;
        try
        {
            const long size = 16 * MiB;
            ulong id = await cluster.CreateVolumeAsync("v", size);
            string socket = await cluster.AttachAsync("v", "node1");
            var everything = PatternLoad.Range(0, size / PatternLoad.BlockSize);
            var oldOwner = cluster["node1"];
            var newOwner = cluster["node2"];
            using var oldClient = Connect(socket);
            var load = new PatternLoad(oldClient, everything.Length);
            await load.FillAsync(everything);
            Assert.True(load.FailedWrites == 0, load.Errors);
            var created = await cluster.WaitHealthyAsync("v");

            using var stop = new CancellationTokenSource();
            var writing = load.WriteAsync(everything, depth: 8, stop.Token);
            long before = load.Writes;
            await Deadline.WaitUntilAsync(() => load.Writes > before + 300 || writing.IsCompleted, "the old owner's client to write");

            // node1 loses every link (the other nodes and all three etcd members); its client still reaches its socket.
            int oldMark = oldOwner.LineCount;
            network.Isolate("node1");
            var isolatedAt = cluster.Now;
            long atIsolation = load.Writes;
            await Deadline.WaitUntilAsync(async () => !(await cluster.NodesAliveAsync()).GetValueOrDefault("node1", true), "node1's membership lease to lapse", FaultDeadline);
            var lapsedAt = cluster.Now;
            long atLapse = load.Writes;

            // The cut-off owner revokes its volume when it loses its lease, before etcd lets the lease lapse: it
            // acknowledges nothing from then on. Writes in flight at the cut end failed, without the links coming back:
            // those waiting for a replica to be marked out of sync in the unreachable store give up at the revocation,
            // the others when their replica requests time out.
            var revoked = await oldOwner.WaitForLineAsync(l => l.Contains("Volume v: ownership at epoch", StringComparison.Ordinal) && l.Contains("revoked", StringComparison.Ordinal), "node1 to revoke its volume", oldMark, FaultDeadline);
            Assert.True(revoked.At <= lapsedAt, $"node1 revoked its volume {(revoked.At - lapsedAt).TotalSeconds:F1} s after the test saw its lease lapse: a new owner could have served by then");
            await stop.CancelAsync();
            Assert.True(await Deadline.CompletesWithinAsync(writing, FaultDeadline), $"the cut-off owner's client writes still hang {FaultDeadline.TotalSeconds} s after it revoked the volume\n{oldOwner.Tail}");
            var writesEndedAt = cluster.Now;

            // The majority side takes the volume over, without --force: node1's lease has lapsed.
            int mark = newOwner.LineCount;
            await cluster.HciAsync("volume", "attach", "v", "--node", "node2");
            var attachedAt = cluster.Now;
            await ClusterFixture.WaitServedAsync(newOwner, "v", mark);
            var servedAt = cluster.Now;
            string attachedLine = newOwner.LinesContaining("Volume v: attached at epoch", mark).Select(l => l.Text).LastOrDefault() ?? "(no attach line)";
            PatternLoad fresh;
            using (var newClient = Connect(newOwner.SocketPath("v")))
            {
                fresh = load.WithDevice(newClient);

                // The new owner serves what the old one acknowledged, then the first extent anew; the rest stays as
                // the old owner left it, so that a write the cut-off owner landed only on its own replica would show
                // as a diverging replica below.
                Assert.True(await fresh.VerifyAsync(everything, tolerateUnacknowledged: true) == 0, fresh.Errors);
                await fresh.FillAsync(PatternLoad.Range(0, BlocksPerExtent));
                Assert.True(fresh.FailedWrites == 0, fresh.Errors);
            }

            long failedBeforeHeal = load.FailedWrites;
            network.Rejoin("node1");
            var healedAt = cluster.Now;
            Assert.True(await Deadline.CompletesWithinAsync(writing, FaultDeadline), $"the old owner's client writes still hang {FaultDeadline.TotalSeconds} s after healing\n{cluster.Tails}");
            var stoppedAt = cluster.Now;
            long oldAcked = load.Writes;
            output.WriteLine($"isolated node1 at {isolatedAt.TotalSeconds:F1} s after {atIsolation} acknowledged writes; its lease lapsed {(lapsedAt - isolatedAt).TotalSeconds:F1} s later ({atLapse - atIsolation} writes acknowledged meanwhile)");
            output.WriteLine($"node1 revoked the volume {(revoked.At - isolatedAt).TotalSeconds:F1} s after the cut ({(revoked.At - lapsedAt).TotalSeconds:+0.0;-0.0} s from when the test saw the lapse): {revoked.Text}");
            output.WriteLine($"hci volume attach (no --force) on node2 took {(attachedAt - revoked.At).TotalSeconds:F1} s after the revoke, node2 served {(servedAt - attachedAt).TotalSeconds:F1} s after it: {attachedLine}");
            output.WriteLine($"the old owner's writes in flight all ended {(writesEndedAt - revoked.At).TotalSeconds:F1} s after the revocation, with the links still cut");
            output.WriteLine($"old owner: {oldAcked} writes acknowledged in all, {failedBeforeHeal} failed before the links came back, {load.FailedWrites} in all; its last writes ended {(stoppedAt - healedAt).TotalSeconds:F1} s after healing; new owner: {fresh.Writes} writes");

            // Nothing the old owner acknowledged after its lease lapsed: the new owner may have served by then.
            Assert.True(oldAcked == atLapse, $"the cut-off owner acknowledged {oldAcked - atLapse} writes after its lease lapsed\n{oldOwner.Tail}");
            Assert.True(atLapse - atIsolation <= 16, $"the cut-off owner acknowledged {atLapse - atIsolation} writes after the cut (only those already past their replicas may complete)");
            Assert.True(revoked.At - isolatedAt <= MembershipLease + TimeSpan.FromSeconds(2), $"node1 revoked its volume {(revoked.At - isolatedAt).TotalSeconds:F1} s after the cut, later than its lease could lapse");

            var healthy = await cluster.WaitHealthyAsync("v", FaultDeadline);
            Assert.Equal("node2", healthy.Owner);
            Assert.True(healthy.Epoch > created.Epoch, healthy.Json);
            using (var newClient = Connect(newOwner.SocketPath("v")))
            {
                var check = load.WithDevice(newClient);
                Assert.True(await check.VerifyAsync(everything, tolerateUnacknowledged: true) == 0, check.Errors);
            }

            await StopAllAsync(cluster);
            await AssertReplicasEqualAsync(cluster, id, healthy, load);
        }
        catch
        {
            output.WriteLine($"network: {network.Describe()}\n{cluster.Tails}");
            throw;
        }
    }

    [Fact]
    public async Task AReplicaBehindADelayedThenStalledThenCutLinkCostsNoWriteAndIsResyncedWhenTheLinkRecovers()
    {
        // Every connection to a node's replicas passes through a fault proxy of the test's (nodes on 127.0.0.1).
        await using var cluster = await ClusterFixture.StartAsync(new ClusterFixtureOptions { NetworkNamespaces = false, Proxies = true });
        var link = cluster.Proxies["node3"];
        try
        {
            const long size = 8 * MiB;
            ulong id = await cluster.CreateVolumeAsync("v", size);
            string socket = await cluster.AttachAsync("v", "node1");
            var everything = PatternLoad.Range(0, size / PatternLoad.BlockSize);
            var owner = cluster["node1"];
            using var client = Connect(socket);
            var load = new PatternLoad(client, everything.Length);
            await load.FillAsync(everything);
            Assert.True(load.FailedWrites == 0, load.Errors);
            await cluster.WaitHealthyAsync("v");
            Assert.True(link.Connections > 0 && link.ForwardedBytes > size, $"the proxy carried {link.Connections} connections, {link.ForwardedBytes} bytes: node3 is not reached through it");

            using var stop = new CancellationTokenSource();
            var writing = load.WriteAsync(everything, depth: 16, stop.Token);
            var rateBefore = await RateAsync(cluster, load, writing, 500);

            // A slow link: every byte to and from node3 held 25 ms. Writes wait for it, none fails, node3 stays in sync.
            // Every write started after the delay took hold crosses the link twice (the write, its answer), so none
            // may be acknowledged in under 50 ms if writes wait for node3. (A rate against the rate before is no test:
            // a slow machine's undelayed rate is near the delayed one's ceiling, 16 writes in flight / 50 ms.)
            var delay = TimeSpan.FromMilliseconds(25);
            link.Delay = delay;
            load.StartLatencyWindow();
            var rateDelayed = await RateAsync(cluster, load, writing, 200);
            var (timedWrites, fastest) = load.LatencyWindow;
            link.Delay = TimeSpan.Zero;
            var afterDelay = await cluster.VolumeStatusAsync("v");
            Assert.True(afterDelay.Healthy, afterDelay.Json);
            Assert.True(timedWrites >= 100, $"only {timedWrites} of the writes during the delay were started after it took hold");
            Assert.True(fastest >= 2 * delay, $"a write was acknowledged in {fastest.TotalMilliseconds:F1} ms with a {delay.TotalMilliseconds} ms link to node3 each way: it did not wait for node3");

            // A silent link (bytes held, connections open): the owner gives up on node3 after its request timeout.
            int mark = owner.LineCount;
            link.Stall();
            var stalledAt = cluster.Now;
            var stallMarked = await owner.WaitForLineAsync(l => l.Contains("replica on node3/0 is now OutOfSync", StringComparison.Ordinal), "the owner to mark node3 out of sync behind a stalled link", mark, FaultDeadline);
            long atStallMark = load.Writes;
            await Deadline.WaitUntilAsync(() => load.Writes > atStallMark + 1000 || writing.IsCompleted, "1000 writes with node3 out of sync");
            link.Resume();
            await cluster.WaitHealthyAsync("v", FaultDeadline);
            var stallHealedAt = cluster.Now;

            // A reset link, refused until restored: node3 is marked out of sync without waiting for a timeout.
            mark = owner.LineCount;
            link.Cut();
            var cutAt = cluster.Now;
            var cutMarked = await owner.WaitForLineAsync(l => l.Contains("replica on node3/0 is now OutOfSync", StringComparison.Ordinal), "the owner to mark node3 out of sync behind a reset link", mark, FaultDeadline);
            long atCutMark = load.Writes;
            await Deadline.WaitUntilAsync(() => load.Writes > atCutMark + 1000 || writing.IsCompleted, "1000 writes with node3 cut");
            link.Restore();
            var healthy = await cluster.WaitHealthyAsync("v", FaultDeadline);
            var cutHealedAt = cluster.Now;
            long atHealthy = load.Writes;
            await Deadline.WaitUntilAsync(() => load.Writes > atHealthy + 500 || writing.IsCompleted, "500 writes after the link recovered");
            await stop.CancelAsync();
            await writing;

            output.WriteLine($"writes/s: {rateBefore:F0} before, {rateDelayed:F0} with node3's link delayed 25 ms each way; the fastest of {timedWrites} writes started during the delay took {fastest.TotalMilliseconds:F1} ms");
            output.WriteLine($"stalled link: node3 marked out of sync {(stallMarked.At - stalledAt).TotalSeconds:F1} s after the stall; healthy again {(stallHealedAt - stallMarked.At).TotalSeconds:F1} s after the mark (resumed after 1000 writes)");
            output.WriteLine($"reset link: node3 marked out of sync {(cutMarked.At - cutAt).TotalSeconds:F1} s after the cut; healthy {(cutHealedAt - cutAt).TotalSeconds:F1} s after it");
            output.WriteLine($"{load.Writes} writes, {load.FailedWrites} failed; proxy: {link.Connections} connections, {link.ForwardedBytes} bytes");
            Assert.True(load.FailedWrites == 0, $"{load.FailedWrites} writes failed: {load.Errors}\n{cluster.Tails}");
            Assert.True(cutMarked.At - cutAt < TimeSpan.FromSeconds(8), $"a reset link took {(cutMarked.At - cutAt).TotalSeconds:F1} s to be noticed, as long as a silent one");

            Assert.True(await load.VerifyAsync(everything) == 0, load.Errors);
            await StopAllAsync(cluster);
            await AssertReplicasHoldAsync(cluster, id, healthy, load, ["node1", "node2", "node3"]);
        }
        catch
        {
            output.WriteLine(cluster.Tails);
            throw;
        }
    }

    // Acknowledged writes per second over the next `writes` writes.
    private static async Task<double> RateAsync(ClusterFixture cluster, PatternLoad load, Task writing, long writes)
    {
        long from = load.Writes;
        var start = cluster.Now;
        await Deadline.WaitUntilAsync(() => load.Writes >= from + writes || writing.IsCompleted, $"{writes} writes");
        return (load.Writes - from) / (cluster.Now - start).TotalSeconds;
    }

    // Every replica of every extent holds the same bytes and checksums, and each block a generation the client wrote
    // that is at least the newest acknowledged one (a write in flight at a failover may have landed or not, on all).
    private async Task AssertReplicasEqualAsync(ClusterFixture cluster, ulong id, VolumeStatus status, PatternLoad load)
    {
        var stores = new Dictionary<string, OfflineReplica>();
        try
        {
            foreach (var node in cluster.Nodes)
            {
                stores[node.Id] = await OfflineReplica.OpenAsync(node.DeviceFiles[0]);
            }

            var diverging = new List<string>();
            foreach (var (extent, replicas) in status.Extents)
            {
                byte[]? first = null;
                uint[]? sums = null;
                foreach (var replica in replicas)
                {
                    var store = stores[replica.Node];
                    var (readStatus, data) = store.Read(id, extent, 0, (int)ExtentSize);
                    Assert.True(readStatus == ReplicaStatus.Ok, $"extent {extent} on {replica.Node}: {readStatus}");
                    var (sumStatus, checksums) = store.Checksums(id, extent, 0, (int)ExtentSize);
                    Assert.Equal(ReplicaStatus.Ok, sumStatus);
                    first ??= data;
                    sums ??= checksums;
                    for (long b = 0; b < BlocksPerExtent; b++)
                    {
                        long block = (extent * BlocksPerExtent) + b;
                        var span = data.AsSpan((int)(b * PatternLoad.BlockSize), PatternLoad.BlockSize);
                        long gen = PatternLoad.GenerationOf(block, span);
                        Assert.True(gen >= load.Acked(block), $"block {block} on {replica.Node} holds generation {gen}, older than the acknowledged {load.Acked(block)} (or not a pattern the client wrote)");
                        if (!span.SequenceEqual(first.AsSpan((int)(b * PatternLoad.BlockSize), PatternLoad.BlockSize)))
                        {
                            diverging.Add($"block {block}: {replica.Node} holds generation {gen}, {replicas[0].Node} {PatternLoad.GenerationOf(block, first.AsSpan((int)(b * PatternLoad.BlockSize), PatternLoad.BlockSize))}");
                        }
                    }

                    Assert.True(sums.SequenceEqual(checksums) || diverging.Count > 0, $"extent {extent}: the checksums on {replica.Node} differ from {replicas[0].Node}'s over equal data");
                }
            }

            Assert.True(diverging.Count == 0, $"{diverging.Count} blocks diverge between replicas:\n{string.Join('\n', diverging.Take(20))}");
            output.WriteLine($"offline: {status.Extents.Count} extents x {status.Extents.Values.First().Count} replicas hold equal data and checksums, every block at or after its newest acknowledged write");
        }
        finally
        {
            foreach (var store in stores.Values)
            {
                await store.DisposeAsync();
            }
        }
    }
}
