using System.Diagnostics;
using Hci.Testing;

namespace Hci.Cluster.Scenarios;

// Owner failover: a volume moves from an owner that is down without --force, never from one whose lease holds, and a
// new owner never serves an extent from replicas that missed its newest writes (Vitastor's test_splitbrain.sh).
public sealed partial class ClusterScenarioTests
{
    [Fact]
    public async Task AVolumeMovesWithoutForceOnceItsKilledOwnersLeaseLapsesAndServesEveryAcknowledgedWrite()
    {
        await using var cluster = await ClusterFixture.StartAsync(3);
        try
        {
            const long size = 16 * MiB;
            await cluster.CreateVolumeAsync("v", size);
            string socket = await cluster.AttachAsync("v", "node1");
            var everything = PatternLoad.Range(0, size / PatternLoad.BlockSize);
            PatternLoad load;
            using (var client = Connect(socket))
            {
                load = new PatternLoad(client, everything.Length);
                await load.FillAsync(everything);
                using var stop = new CancellationTokenSource();
                var writing = load.WriteAsync(everything, depth: 8, stop.Token);
                long before = load.Writes;
                await Deadline.WaitUntilAsync(() => load.Writes > before + 300 || writing.IsCompleted, "the client to write");
                cluster["node1"].Kill();
                await stop.CancelAsync();
                await writing;
            }

            // node1's membership lease still holds for up to its TTL: the volume does not move without --force.
            var killedAt = Stopwatch.StartNew();
            var refused = await cluster.TryHciAsync("volume", "attach", "v", "--node", "node2");
            Assert.True(refused.ExitCode == 1, $"attach while node1's lease held: exit {refused.ExitCode}: {refused.Output}{refused.Error}");
            Assert.Contains("attached to node 'node1', which is alive", refused.Error);
            Assert.Equal("node1", (await cluster.VolumeStatusAsync("v")).Owner);

            // Once it lapses, it moves as it is.
            int mark = cluster["node2"].LineCount;
            await Deadline.WaitUntilAsync(
                async () => (await cluster.TryHciAsync("volume", "attach", "v", "--node", "node2")).ExitCode == 0,
                "the volume to move to node2 once node1's lease lapsed",
                TimeSpan.FromSeconds(60));
            var movedAfter = killedAt.Elapsed;
            await ClusterFixture.WaitServedAsync(cluster["node2"], "v", mark);
            output.WriteLine($"node1 killed after {load.Writes} writes ({load.FailedWrites} failed); the volume moved to node2 without --force {movedAfter.TotalSeconds:F1} s later (membership TTL 10 s)");

            using (var client = Connect(cluster["node2"].SocketPath("v")))
            {
                var check = load.WithDevice(client);
                Assert.True(await check.VerifyAsync(everything, tolerateUnacknowledged: true) == 0, check.Errors);
                await check.FillAsync(everything);
                Assert.True(check.FailedWrites == 0, check.Errors);
                Assert.True(await check.VerifyAsync(everything) == 0, check.Errors);
            }
        }
        catch
        {
            output.WriteLine(cluster.Tails);
            throw;
        }
    }

    [Fact]
    public async Task ANewOwnerDoesNotServeFromAReplicaThatMissedTheNewestWritesWhileTheOneThatHasThemIsDown()
    {
        // Vitastor's tests/test_splitbrain.sh: two replicas; one is away while the other takes writes; then the one with
        // the newest writes dies and the stale one comes back. Serving the stale one would lose acknowledged writes.
        await using var cluster = await ClusterFixture.StartAsync(3);
        try
        {
            const long size = 4 * MiB; // one extent: one replica set
            await cluster.CreateVolumeAsync("v", size, replicas: 2);
            string socket = await cluster.AttachAsync("v", "node1");
            var everything = PatternLoad.Range(0, size / PatternLoad.BlockSize);
            PatternLoad load;
            using (var client = Connect(socket))
            {
                load = new PatternLoad(client, everything.Length);
                await load.FillAsync(everything);
                Assert.True(load.FailedWrites == 0, load.Errors);
            }

            // The owner is one of the two replicas (as a VM's host often is), so that losing it loses the newest copy.
            var set = (await cluster.WaitHealthyAsync("v")).Extents[0].Select(r => r.Node).ToArray();
            string fresh = set.Contains("node1") ? "node1" : set[0];
            string stale = set.Single(n => n != fresh);
            if (fresh != "node1")
            {
                await cluster.HciAsync("volume", "detach", "v");
                await cluster["node1"].WaitForLineAsync(l => l.Contains("detached volume v", StringComparison.Ordinal), "node1 to let the volume go");
                socket = await cluster.AttachAsync("v", fresh);
            }

            using (var client = Connect(socket))
            {
                var writer = load.WithDevice(client);
                cluster[stale].Kill();
                await writer.FillAsync(everything); // a second generation that only the fresh replica takes
                Assert.True(writer.FailedWrites == 0, writer.Errors);
                load = writer;
            }

            var degraded = await cluster.VolumeStatusAsync("v");
            Assert.Equal("out-of-sync", degraded.Extents[0].Single(r => r.Node == stale).State);
            Assert.Equal("in-sync", degraded.Extents[0].Single(r => r.Node == fresh).State);

            // The fresh replica (and owner) dies; the stale one comes back and is made the owner once the lease lapsed.
            cluster[fresh].Kill();
            await cluster[stale].StartAsync();
            int mark = cluster[stale].LineCount;
            await Deadline.WaitUntilAsync(
                async () => (await cluster.TryHciAsync("volume", "attach", "v", "--node", stale)).ExitCode == 0,
                $"the volume to move to {stale} once {fresh}'s lease lapsed",
                TimeSpan.FromSeconds(60));
            var refusal = await cluster[stale].WaitForLineAsync(l => l.Contains("cannot attach volume v", StringComparison.Ordinal), $"{stale} to refuse to serve the volume", mark);
            output.WriteLine(refusal.Text);
            Assert.Contains("extent 0 has no reachable in-sync replica", refusal.Text);
            Assert.Contains($"{fresh}/0", refusal.Text);
            Assert.False(File.Exists(cluster[stale].SocketPath("v")), $"{stale} serves the volume from its stale replica");

            // Nothing was marked: the fresh replica is still the one in sync, so the volume can come back with it.
            var held = await cluster.VolumeStatusAsync("v");
            Assert.Equal("in-sync", held.Extents[0].Single(r => r.Node == fresh).State);
            Assert.Equal("out-of-sync", held.Extents[0].Single(r => r.Node == stale).State);

            // The fresh replica comes back: the new owner (still retrying) attaches, serves the newest writes and
            // resyncs the stale replica.
            await cluster[fresh].StartAsync();
            await ClusterFixture.WaitServedAsync(cluster[stale], "v", mark);
            using (var client = Connect(cluster[stale].SocketPath("v")))
            {
                var check = load.WithDevice(client);
                Assert.True(await check.VerifyAsync(everything) == 0, check.Errors);
            }

            await cluster.WaitHealthyAsync("v");
            int refusals = cluster[stale].LinesContaining("cannot attach volume v", mark).Count;
            output.WriteLine($"replicas {fresh} (newest) and {stale} (stale): the new owner {stale} refused to serve {refusals} time(s) while {fresh} was down, then served every acknowledged write and resynced");
        }
        catch
        {
            output.WriteLine(cluster.Tails);
            throw;
        }
    }

    [Fact]
    public async Task AnOwnerThatLosesItsMembershipLeaseStopsServingAtOnceAndComesBackOnItsOwnWhenTheStoreDoes()
    {
        await using var cluster = await ClusterFixture.StartAsync(3);
        try
        {
            const long size = 8 * MiB;
            await cluster.CreateVolumeAsync("v", size);
            string socket = await cluster.AttachAsync("v", "node1");
            var everything = PatternLoad.Range(0, size / PatternLoad.BlockSize);
            var owner = cluster["node1"];
            PatternLoad load;
            int mark = owner.LineCount;
            using (var client = Connect(socket))
            {
                load = new PatternLoad(client, everything.Length);
                await load.FillAsync(everything);
                using var stop = new CancellationTokenSource();
                var writing = load.WriteAsync(everything, depth: 4, stop.Token);
                long before = load.Writes;
                await Deadline.WaitUntilAsync(() => load.Writes > before + 200 || writing.IsCompleted, "the client to write");

                // etcd stops answering (SIGSTOP): no keepalive is acknowledged, so after one TTL (10 s) every node has
                // lost its lease and etcd, once back, lets it lapse. The owner must stop before that, not after.
                var frozenAt = cluster.Now;
                cluster.Etcd!.Freeze();
                try
                {
                    var revoked = await owner.WaitForLineAsync(l => l.Contains("Volume v: ownership at epoch", StringComparison.Ordinal) && l.Contains("revoked", StringComparison.Ordinal), "node1 to revoke its volume", mark, TimeSpan.FromSeconds(30));
                    long atRevoke = load.Writes;
                    await Deadline.WaitUntilAsync(() => load.FailedWrites > 0 || writing.IsCompleted, "the client's writes to fail once the volume is revoked");
                    output.WriteLine($"etcd frozen at {frozenAt.TotalSeconds:F1} s; node1 revoked the volume at {revoked.At.TotalSeconds:F1} s ({(revoked.At - frozenAt).TotalSeconds:F1} s later); {load.Writes} writes acknowledged in all ({load.Writes - atRevoke} after the revocation line), then {load.FailedWrites} failed");
                    Assert.True(revoked.At - frozenAt < TimeSpan.FromSeconds(12), $"revoked {(revoked.At - frozenAt).TotalSeconds:F1} s after etcd stopped answering; the membership TTL is 10 s");
                }
                finally
                {
                    cluster.Etcd.Thaw();
                }

                await stop.CancelAsync();
                await writing;
            }

            // etcd is back: node1 takes a new lease and, still the volume's owner, attaches it again at a new epoch.
            await ClusterFixture.WaitServedAsync(owner, "v", mark);
            using (var client = Connect(socket))
            {
                var check = load.WithDevice(client);
                Assert.True(await check.VerifyAsync(everything, tolerateUnacknowledged: true) == 0, check.Errors + "\n" + string.Join('\n', owner.LinesContaining(string.Empty, mark).Select(l => l.Text)));
                await check.FillAsync(everything);
                Assert.True(check.FailedWrites == 0, check.Errors);
                Assert.True(await check.VerifyAsync(everything) == 0, check.Errors);
            }
        }
        catch
        {
            output.WriteLine(cluster.Tails);
            throw;
        }
    }
}
