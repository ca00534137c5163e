using System.Globalization;
using System.Text.RegularExpressions;
using Hci.Core.Replication;
using Hci.Testing.Replication;
using Hci.Transport.Replication;
using Hci.Transport.Vhost;
using Xunit.Abstractions;

[assembly: CollectionBehavior(DisableTestParallelization = true)]

namespace Hci.Cluster.Scenarios;

/// <summary>
/// Whole failure scenarios on a cluster of real processes: etcd, three <c>hci-hosttype</c> nodes (or the embedded single
/// node on three device files), SIGKILL, and a client writing known patterns through vhost-user. Each test checks the
/// data end to end: through the volume, and offline on every replica's device file.
/// </summary>
public sealed partial class ClusterScenarioTests(ITestOutputHelper output)
{
    private const long MiB = 1L << 20;
    private const long ExtentSize = ReplicaGeometry.DefaultExtentSize;
    private const long BlocksPerExtent = ExtentSize / PatternLoad.BlockSize;
    private const long RegionSize = ExtentSize / ReplicaGeometry.RegionsPerExtent;
    private const long BlocksPerRegion = RegionSize / PatternLoad.BlockSize;

    [Fact]
    public async Task AReplicaNodeKilledWhileTheClientWritesCostsNoWriteAndResyncsOnlyTheRegionsItMissed()
    {
        await using var cluster = await ClusterFixture.StartAsync(3);
        try
        {
            const long size = 32 * MiB;
            ulong id = await cluster.CreateVolumeAsync("v", size);
            string socket = await cluster.AttachAsync("v", "node1");
            var everything = PatternLoad.Range(0, size / PatternLoad.BlockSize);
            var owner = cluster["node1"];
            var victim = cluster["node3"];

            using (var client = Connect(socket))
            {
                var load = new PatternLoad(client, everything.Length);
                await load.FillAsync(everything);
                Assert.True(load.FailedWrites == 0, load.Errors);
                await cluster.WaitHealthyAsync("v");

                // While the node is away the client writes into five 64 KiB regions of extents 0 and 1 only.
                long[] regions = [3, 17, 40, ReplicaGeometry.RegionsPerExtent + 5, ReplicaGeometry.RegionsPerExtent + 60];
                var away = regions.SelectMany(r => PatternLoad.Range(r * BlocksPerRegion, BlocksPerRegion)).ToArray();
                int mark = owner.LineCount;
                using var stop = new CancellationTokenSource();
                long before = load.Writes;
                var writing = load.WriteAsync(away, depth: 16, stop.Token);
                await Deadline.WaitUntilAsync(() => load.Writes > before + 300 || writing.IsCompleted, "the client to write at depth");

                victim.Kill();
                var killedAt = cluster.Now;
                long atKill = load.Writes;
                await Deadline.WaitUntilAsync(() => load.Writes > atKill + 2000 || writing.IsCompleted, "2000 writes after the kill");
                var degraded = await cluster.VolumeStatusAsync("v");
                Assert.False(degraded.Healthy, degraded.Json);
                foreach (var (extent, replicas) in degraded.Extents)
                {
                    string state = replicas.Single(r => r.Node == "node3").State;
                    Assert.True(extent <= 1 ? state == "out-of-sync" : state == "in-sync", $"extent {extent}: node3 is {state}: {degraded.Json}");
                }

                var ready = await victim.StartAsync();
                long atReturn = load.Writes;
                await Deadline.WaitUntilAsync(() => load.Writes > atReturn + 1000 || writing.IsCompleted, "1000 writes after the node came back");
                var healthy = await cluster.WaitHealthyAsync("v");
                var healthyAt = cluster.Now;
                await stop.CancelAsync();
                await writing;
                Assert.True(load.FailedWrites == 0, $"{load.FailedWrites} writes failed: {load.Errors}\n{cluster.Tails}");

                var resyncs = owner.LinesContaining("resynced extent", mark).Select(l => (Line: l, Match: ResyncedLine().Match(l.Text))).Where(r => r.Match.Success && r.Match.Groups["node"].Value == "node3").ToList();
                Assert.True(resyncs.Count > 0, $"the owner logged no resync to node3\n{owner.Tail}");
                long resyncedRegions = resyncs.Sum(r => long.Parse(r.Match.Groups["regions"].Value, CultureInfo.InvariantCulture));
                long resyncedBytes = resyncs.Sum(r => long.Parse(r.Match.Groups["bytes"].Value, CultureInfo.InvariantCulture));
                var extents = resyncs.Select(r => long.Parse(r.Match.Groups["extent"].Value, CultureInfo.InvariantCulture)).Distinct().Order().ToList();
                var lastResync = resyncs.Max(r => r.Line.At);
                var firstResyncing = owner.LinesContaining("replica on node3/0 is now Resyncing", mark).Min(l => l.At);
                output.WriteLine($"killed node3 at {killedAt.TotalSeconds:F2} s after {atKill} writes; it was ready again at {ready.At.TotalSeconds:F2} s ({(ready.At - killedAt).TotalSeconds:F2} s away, {atReturn - atKill} writes meanwhile)");
                output.WriteLine($"resync to node3: {resyncedRegions} regions, {resyncedBytes} bytes in {resyncs.Count} resync(s) of extents {string.Join(',', extents)}; copying took {(lastResync - firstResyncing).TotalMilliseconds:F0} ms (first extent marked resyncing to last resynced), the last resync was logged {(lastResync - ready.At).TotalMilliseconds:F0} ms after the node was ready; volume seen healthy {(healthyAt - ready.At).TotalMilliseconds:F0} ms after it");
                output.WriteLine($"client: {load.Writes} writes, {load.FailedWrites} failed; regions written while away: {regions.Length} ({regions.Length * RegionSize} bytes)");
                Assert.All(extents, e => Assert.True(e <= 1, $"extent {e} was resynced but no write touched it while node3 was away"));
                // The five missed regions, plus at most a few the returning replica's activity log still held dirty: far
                // fewer than its two extents (128 regions), let alone the volume.
                Assert.True(resyncedRegions >= 1 && resyncedRegions < ReplicaGeometry.RegionsPerExtent, $"{resyncedRegions} regions resynced for {regions.Length} missed");
                Assert.Equal(resyncedRegions * RegionSize, resyncedBytes);

                Assert.True(await load.VerifyAsync(everything) == 0, load.Errors);
                await StopAllAsync(cluster);
                await AssertReplicasHoldAsync(cluster, id, healthy, load, ["node1", "node2", "node3"]);
            }
        }
        catch
        {
            output.WriteLine(cluster.Tails);
            throw;
        }
    }

    [Fact]
    public async Task TheEmbeddedOwnerKilledWhileItWritesComesBackWithEveryAcknowledgedWriteAndAgreeingReplicas()
    {
        await using var cluster = ClusterFixture.CreateEmbedded(3);
        try
        {
            var node = cluster["node1"];

            // The local store is locked while the host runs, so the host registers its devices first, then stops
            // while hci creates and attaches the volume.
            await node.StartAsync();
            await node.StopAsync();
            const long size = 16 * MiB;
            ulong id = await cluster.CreateVolumeAsync("v", size);
            await cluster.HciAsync("volume", "attach", "v", "--node", "node1");
            var status = await cluster.VolumeStatusAsync("v");
            int mark = node.LineCount;
            await node.StartAsync();
            await ClusterFixture.WaitServedAsync(node, "v", mark);

            var everything = PatternLoad.Range(0, size / PatternLoad.BlockSize);
            PatternLoad load;
            using (var client = Connect(node.SocketPath("v")))
            {
                load = new PatternLoad(client, everything.Length);
                await load.FillAsync(everything);
                Assert.True(load.FailedWrites == 0, load.Errors);
                using var stop = new CancellationTokenSource();
                var writing = load.WriteAsync(everything, depth: 16, stop.Token);
                long before = load.Writes;
                await Deadline.WaitUntilAsync(() => load.Writes > before + 2000 || writing.IsCompleted, "2000 writes at depth");
                node.Kill();
                await stop.CancelAsync();
                await writing;
                output.WriteLine($"owner killed after {load.Writes} acknowledged writes; {load.FailedWrites} in flight failed");
            }

            mark = node.LineCount;
            await node.StartAsync();
            var attached = await node.WaitForLineAsync(l => l.Contains("Volume v: attached at epoch", StringComparison.Ordinal), "the volume to be attached again", mark);
            await ClusterFixture.WaitServedAsync(node, "v", mark);
            output.WriteLine($"after the restart: {attached.Text}");
            using (var client = Connect(node.SocketPath("v")))
            {
                long wrong = 0;
                const int chunk = 128 * 1024; // the vhost-user client's maximum transfer
                using var buffer = new Hci.Core.Buffers.AlignedBuffer(chunk);
                for (long at = 0; at < size; at += chunk)
                {
                    await client.ReadAsync(at, buffer.Memory);
                    for (long b = 0; b < chunk / PatternLoad.BlockSize; b++)
                    {
                        long block = (at / PatternLoad.BlockSize) + b;
                        long gen = PatternLoad.GenerationOf(block, buffer.Span.Slice((int)(b * PatternLoad.BlockSize), PatternLoad.BlockSize));
                        if (gen < load.Acked(block))
                        {
                            wrong++;
                            output.WriteLine($"block {block}: read generation {gen}, acknowledged {load.Acked(block)}");
                        }
                    }
                }

                Assert.Equal(0, wrong);
            }

            await node.StopAsync();
            await AssertReplicasAgreeAsync(cluster, id, status, node.DeviceFiles);
        }
        catch
        {
            output.WriteLine(cluster.Tails);
            throw;
        }
    }

    [Fact]
    public async Task AReturningReplicaWithStaleDataIsNeverReadBeforeItIsResynced()
    {
        await using var cluster = await ClusterFixture.StartAsync(3);
        try
        {
            // Eight stale extents: their resync must outlast the new owner's first reads (with one device write per
            // replica write, two extents resynced in half a second, before the reader had started).
            const long size = 48 * MiB;
            await cluster.CreateVolumeAsync("v", size);
            string socket = await cluster.AttachAsync("v", "node1");
            var everything = PatternLoad.Range(0, size / PatternLoad.BlockSize);
            var away = PatternLoad.Range(0, 8 * BlocksPerExtent);
            var victim = cluster["node3"];
            PatternLoad load;
            using (var client = Connect(socket))
            {
                load = new PatternLoad(client, everything.Length);
                await load.FillAsync(everything);
                await cluster.WaitHealthyAsync("v");
                victim.Kill();

                // node3 misses a second generation of extents 0 to 7.
                await load.FillAsync(away);
                Assert.True(load.FailedWrites == 0, load.Errors);
            }

            // Its stale replica becomes the owner's local one, the replica read first, when it comes back.
            await cluster.HciAsync("volume", "detach", "v");
            await cluster["node1"].WaitForLineAsync(l => l.Contains("detached volume v", StringComparison.Ordinal), "node1 to let the volume go");
            await cluster.HciAsync("volume", "attach", "v", "--node", "node3");
            int mark = victim.LineCount;
            await victim.StartAsync();
            await ClusterFixture.WaitServedAsync(victim, "v", mark);
            using (var client = Connect(victim.SocketPath("v")))
            {
                var checker = load.WithDevice(client);
                using var stop = new CancellationTokenSource();
                var reading = checker.ReadAsync(away, depth: 8, stop.Token);
                await cluster.WaitHealthyAsync("v");
                long atHealthy = checker.Reads;
                await Deadline.WaitUntilAsync(() => checker.Reads > atHealthy + 200 || reading.IsCompleted, "reads after the resync");
                await stop.CancelAsync();
                await reading;
                output.WriteLine($"{checker.Reads} reads while node3's stale replica came back as the owner's local one ({atHealthy} before the volume was healthy), {checker.StaleReads} stale, {checker.FailedReads} failed");
                output.WriteLine(string.Join('\n', victim.LinesContaining("Volume v:", mark).Select(l => l.Text)));
                Assert.True(checker.StaleReads == 0 && checker.FailedReads == 0, checker.Errors);
                Assert.True(atHealthy > 0, "no read ran before the replica was resynced");
                Assert.True(await checker.VerifyAsync(everything) == 0, checker.Errors);
            }
        }
        catch
        {
            output.WriteLine(cluster.Tails);
            throw;
        }
    }

    [Fact]
    public async Task AnOwnerFencedByAForcedAttachElsewhereIsRefusedByEveryReplica()
    {
        await using var cluster = await ClusterFixture.StartAsync(3);
        try
        {
            const long size = 8 * MiB;
            ulong id = await cluster.CreateVolumeAsync("v", size);
            string socket = await cluster.AttachAsync("v", "node1");
            var everything = PatternLoad.Range(0, size / PatternLoad.BlockSize);
            var old = await cluster.VolumeStatusAsync("v");
            PatternLoad load;
            using (var client = Connect(socket))
            {
                load = new PatternLoad(client, everything.Length);
                await load.FillAsync(everything);
                using var stop = new CancellationTokenSource();
                var writing = load.WriteAsync(everything, depth: 8, stop.Token);
                long before = load.Writes;
                await Deadline.WaitUntilAsync(() => load.Writes > before + 300 || writing.IsCompleted, "the old owner's client to write");
                await cluster.AttachAsync("v", "node2", force: true);
                await Deadline.WaitUntilAsync(() => load.FailedWrites > 0 || writing.IsCompleted, "the old owner's client to see its writes refused");
                await stop.CancelAsync();
                await writing;
                output.WriteLine($"old owner: {load.Writes} writes acknowledged, {load.FailedWrites} refused: {load.Errors.Split('\n')[0]}");
            }

            // The test plays the old owner at the old epoch, through the node-to-node protocol with the cluster's key.
            var current = await cluster.VolumeStatusAsync("v");
            Assert.True(current.Epoch > old.Epoch, current.Json);
            using (var connector = new RemoteReplicaConnector(new RemoteReplicaConnectorOptions
            {
                NodeId = "node1",
                KeyFile = cluster.KeyFile,
                Resolve = n => cluster[n].Address,
            }))
            {
                foreach (var node in cluster.Nodes)
                {
                    using var probe = new ReplicaProbe(connector, node.Id);
                    var stale = probe.Write(id, 0, 0, new byte[PatternLoad.BlockSize], epoch: old.Epoch, device: 0);
                    Assert.Equal(ReplicaStatus.StaleEpoch, stale);
                }
            }

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
    public async Task BitsFlippedOnTheOwnersReplicaAreNeverServedAndGetRepairedFromAGoodReplica()
    {
        await using var cluster = await ClusterFixture.StartAsync(3);
        try
        {
            const long size = 8 * MiB;
            ulong id = await cluster.CreateVolumeAsync("v", size);
            string socket = await cluster.AttachAsync("v", "node1");
            var everything = PatternLoad.Range(0, size / PatternLoad.BlockSize);
            var owner = cluster["node1"];
            PatternLoad load;
            using (var client = Connect(socket))
            {
                load = new PatternLoad(client, everything.Length);
                await load.FillAsync(everything);
                Assert.True(load.FailedWrites == 0, load.Errors);
            }

            var healthy = await cluster.WaitHealthyAsync("v");
            await owner.StopAsync();
            long[] damaged = [5, BlocksPerExtent + 700];
            await using (var replica = await OfflineReplica.OpenAsync(owner.DeviceFiles[0]))
            {
                foreach (long block in damaged)
                {
                    long offset = replica.DataOffset(id, block / BlocksPerExtent) + ((block % BlocksPerExtent) * PatternLoad.BlockSize) + 100;
                    OfflineReplica.FlipBits(owner.DeviceFiles[0], offset);
                }
            }

            int mark = owner.LineCount;
            await owner.StartAsync();
            await ClusterFixture.WaitServedAsync(owner, "v", mark);
            using (var client = Connect(socket))
            {
                var reader = load.WithDevice(client);
                Assert.True(await reader.VerifyAsync(damaged) == 0, reader.Errors);
                await owner.WaitForLineAsync(l => l.Contains("Volume v: repaired extent", StringComparison.Ordinal), "the owner to log the repair", mark);
                Assert.True(await reader.VerifyAsync(everything) == 0, reader.Errors);
            }

            var mismatches = owner.LinesContaining("failed its checksum", mark);
            var repairs = owner.LinesContaining("Volume v: repaired extent", mark);
            output.WriteLine($"{mismatches.Count} checksum mismatch(es), {repairs.Count} repair(s):\n{string.Join('\n', repairs.Select(l => l.Text))}");
            Assert.Equal(damaged.Length, mismatches.Count);
            Assert.Equal(damaged.Length, repairs.Count);
            await StopAllAsync(cluster);
            await AssertReplicasHoldAsync(cluster, id, healthy, load, ["node1", "node2", "node3"]);
        }
        catch
        {
            output.WriteLine(cluster.Tails);
            throw;
        }
    }

    [GeneratedRegex(@"resynced extent (?<extent>\d+) to (?<node>[^/]+)/(?<device>\d+): (?<regions>\d+) regions, (?<bytes>\d+) bytes")]
    private static partial Regex ResyncedLine();

    private static VhostUserBlkClient Connect(string socket) => VhostUserBlkClient.Connect(new VhostUserBlkClientOptions
    {
        SocketPath = socket,
        QueueCount = 1,
        QueueSize = 64,
        Reconnect = false,
        ConnectTimeout = TimeSpan.FromSeconds(10),
    });

    private static async Task StopAllAsync(ClusterFixture cluster)
    {
        foreach (var node in cluster.Nodes)
        {
            await node.StopAsync();
        }
    }

    // Every replica of every extent holds exactly the client's newest data, with equal checksums.
    private async Task AssertReplicasHoldAsync(ClusterFixture cluster, ulong id, VolumeStatus status, PatternLoad load, string[] nodes)
    {
        var stores = new Dictionary<(string Node, int Device), OfflineReplica>();
        try
        {
            foreach (var node in nodes)
            {
                var files = cluster[node].DeviceFiles;
                for (int d = 0; d < files.Count; d++)
                {
                    stores[(node, d)] = await OfflineReplica.OpenAsync(files[d]);
                }
            }

            long blocks = 0;
            foreach (var (extent, replicas) in status.Extents)
            {
                uint[]? sums = null;
                foreach (var replica in replicas)
                {
                    var store = stores[(replica.Node, replica.Device)];
                    var (readStatus, data) = store.Read(id, extent, 0, (int)ExtentSize);
                    Assert.True(readStatus == ReplicaStatus.Ok, $"extent {extent} on {replica.Node}/{replica.Device}: {readStatus}");
                    for (long b = 0; b < BlocksPerExtent; b++)
                    {
                        long block = (extent * BlocksPerExtent) + b;
                        Assert.True(load.IsNewest(block, data.AsSpan((int)(b * PatternLoad.BlockSize), PatternLoad.BlockSize)), $"block {block} on {replica.Node}/{replica.Device} is not the newest acknowledged write (generation {PatternLoad.GenerationOf(block, data.AsSpan((int)(b * PatternLoad.BlockSize), PatternLoad.BlockSize))}, expected {load.Acked(block)})");
                    }

                    var (sumStatus, checksums) = store.Checksums(id, extent, 0, (int)ExtentSize);
                    Assert.Equal(ReplicaStatus.Ok, sumStatus);
                    if (sums is null)
                    {
                        sums = checksums;
                    }
                    else
                    {
                        Assert.True(sums.SequenceEqual(checksums), $"extent {extent}: the checksums on {replica.Node}/{replica.Device} differ from {replicas[0].Node}/{replicas[0].Device}");
                    }
                }

                blocks += BlocksPerExtent;
            }

            output.WriteLine($"offline: {status.Extents.Count} extents x {status.Extents.Values.First().Count} replicas hold the newest data, checksums equal ({blocks} blocks per replica)");
        }
        finally
        {
            foreach (var store in stores.Values)
            {
                await store.DisposeAsync();
            }
        }
    }

    // Every replica of every extent holds the same bytes and checksums (what they hold is checked through the volume).
    private async Task AssertReplicasAgreeAsync(ClusterFixture cluster, ulong id, VolumeStatus before, IReadOnlyList<string> files)
    {
        var stores = new List<OfflineReplica>();
        try
        {
            foreach (var file in files)
            {
                stores.Add(await OfflineReplica.OpenAsync(file));
            }

            var status = await cluster.VolumeStatusAsync("v");
            Assert.NotEmpty(status.Extents);
            foreach (var (extent, replicas) in status.Extents)
            {
                byte[]? first = null;
                uint[]? sums = null;
                foreach (var replica in replicas)
                {
                    var (readStatus, data) = stores[replica.Device].Read(id, extent, 0, (int)ExtentSize);
                    Assert.True(readStatus == ReplicaStatus.Ok, $"extent {extent} on device {replica.Device}: {readStatus}");
                    var (sumStatus, checksums) = stores[replica.Device].Checksums(id, extent, 0, (int)ExtentSize);
                    Assert.Equal(ReplicaStatus.Ok, sumStatus);
                    first ??= data;
                    sums ??= checksums;
                    Assert.True(first.AsSpan().SequenceEqual(data), $"extent {extent}: device {replica.Device} differs from device {replicas[0].Device}");
                    Assert.True(sums.SequenceEqual(checksums), $"extent {extent}: device {replica.Device}'s checksums differ");
                }
            }

            output.WriteLine($"offline: {status.Extents.Count} extents, {status.Extents.Values.First().Count} local replicas each, identical data and checksums (volume created at epoch {before.Epoch}, now {status.Epoch})");
        }
        finally
        {
            foreach (var store in stores)
            {
                await store.DisposeAsync();
            }
        }
    }
}
