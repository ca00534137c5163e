using System.Diagnostics;
using System.Globalization;
using Hci.Core.Replication;
using Hci.Transport.Vhost;
using Xunit.Abstractions;

namespace Hci.Cluster.Scenarios;

/// <summary>
/// kill -9 cycles under a register workload (Jepsen's independent registers, <see cref="RegisterLoad"/>): four node
/// processes, a 3-replica volume, and a client writing and reading through the owner's vhost-user socket while, cycle
/// after cycle, a random node is SIGKILLed and restarted. When the victim is the owner, the volume is attached on
/// another live node (<c>hci volume attach --force</c>) and the client reconnects there. The history is checked
/// after every fault (<see cref="RegisterChecker"/>), and at the end every replica is compared offline.
/// </summary>
/// <remarks>
/// <para><c>HCI_KILL_CYCLES</c> sets the cycle count (default 5, a couple of minutes on a 2-core machine;
/// <c>bench/faults/kill-cycles</c> runs 50), <c>HCI_KILL_SEED</c> the random seed (default 14), and
/// <c>HCI_KILL_SUMMARY</c> a file the summary is written to.</para>
/// </remarks>
public sealed class KillCycleTests(ITestOutputHelper output)
{
    private const long MiB = 1L << 20;
    private const long ExtentSize = ReplicaGeometry.DefaultExtentSize;
    private const long VolumeSize = 16 * MiB;
    private const long Blocks = VolumeSize / RegisterBlock.Size;
    private static readonly TimeSpan HealthyDeadline = TimeSpan.FromSeconds(90);

    [Fact]
    public async Task RandomNodesKilledWithSigkillCycleAfterCycleLoseNoAcknowledgedWriteServeNoStaleReadAndLeaveEqualReplicas()
    {
        int cycles = EnvironmentInt("HCI_KILL_CYCLES", 5);
        int seed = EnvironmentInt("HCI_KILL_SEED", 14);
        string? summaryFile = Environment.GetEnvironmentVariable("HCI_KILL_SUMMARY") is { Length: > 0 } f ? f : null;
        var random = new Random(seed);
        var watch = Stopwatch.StartNew();
        await using var cluster = await ClusterFixture.StartAsync(4);
        try
        {
            ulong id = await cluster.CreateVolumeAsync("v", VolumeSize, replicas: 3);
            string owner = "node1";
            string socket = await cluster.AttachAsync("v", owner);
            var load = new RegisterLoad(new RegisterHistory(), firstBlock: 0, blocks: Blocks, writers: 8);
            var client = Connect(socket);
            var stop = new CancellationTokenSource();
            var run = load.RunAsync(client, readers: 4, stop.Token, seed);
            int ownerKills = 0, runs = 1;
            try
            {
                await WritesAsync(load, 300, run, "the first writes");
                for (int c = 1; c <= cycles; c++)
                {
                    var cycleWatch = Stopwatch.StartNew();
                    bool killOwner = random.Next(4) == 0 || (c == cycles && ownerKills == 0);
                    var victim = killOwner ? cluster[owner] : cluster.Nodes.Where(n => n.Id != owner).ElementAt(random.Next(3));
                    string what;
                    victim.Kill();
                    if (killOwner)
                    {
                        // The client's requests in flight fail (the socket is gone); the volume moves to a live node.
                        ownerKills++;
                        await stop.CancelAsync();
                        await run;
                        await client.DisposeAsync();
                        stop.Dispose();
                        var candidates = cluster.Nodes.Where(n => n.Id != owner).ToList();
                        string next = candidates[random.Next(candidates.Count)].Id;
                        socket = await cluster.AttachAsync("v", next, force: true);
                        what = $"owner {owner} killed, volume attached on {next}";
                        owner = next;
                        client = Connect(socket);
                        stop = new CancellationTokenSource();
                        run = load.RunAsync(client, readers: 4, stop.Token, seed + runs++);
                    }
                    else
                    {
                        what = $"{victim.Id} killed";
                    }

                    await WritesAsync(load, 200, run, $"writes while {victim.Id} is down (cycle {c})");
                    await victim.StartAsync();
                    await cluster.WaitHealthyAsync("v", HealthyDeadline);
                    await WritesAsync(load, 100, run, $"writes after the volume was healthy again (cycle {c})");
                    var result = RegisterChecker.Check(load.History);
                    string line = $"cycle {c}: {what}; healthy again after {cycleWatch.Elapsed.TotalSeconds:F1} s; {result.Summary}";
                    output.WriteLine(line);
                    if (summaryFile is not null)
                    {
                        await File.AppendAllLinesAsync(summaryFile, [line]);
                    }

                    Assert.True(result.IsValid, $"{result}\n{load.Errors}");
                }

                await stop.CancelAsync();
                await run;
                await load.ReadAllAsync(client);
            }
            finally
            {
                await stop.CancelAsync();
                await run.ContinueWith(_ => { }, TaskScheduler.Default);
                await client.DisposeAsync();
                stop.Dispose();
            }

            var final = RegisterChecker.Check(load.History);
            var healthy = await cluster.WaitHealthyAsync("v", HealthyDeadline);
            foreach (var node in cluster.Nodes)
            {
                await node.StopAsync();
            }

            long compared = await AssertReplicasEqualAsync(cluster, id, healthy, load);
            var counts = final.Counts;
            string summary = string.Create(CultureInfo.InvariantCulture,
                $"kill-cycles: cycles={cycles} seed={seed} owner-kills={ownerKills} writes={counts.Writes} failed-writes={counts.FailedWrites} unknown-writes={counts.UnknownWrites} reads={counts.Reads} failed-reads={counts.FailedReads} unknown-reads={counts.UnknownReads} violations={final.TotalViolations} lost-writes={final.Count(RegisterViolationKind.LostWrite)} stale-reads={final.Count(RegisterViolationKind.StaleRead) + final.Count(RegisterViolationKind.ResurrectedWrite)} replica-blocks-compared={compared} duration-s={watch.Elapsed.TotalSeconds:F0}");
            output.WriteLine(final.ToString());
            output.WriteLine(summary);
            if (summaryFile is not null)
            {
                await File.AppendAllLinesAsync(summaryFile, [final.ToString(), summary]);
            }

            Assert.True(final.IsValid, $"{final}\n{load.Errors}");
        }
        catch
        {
            output.WriteLine(cluster.Tails);
            throw;
        }
    }

    private static async Task WritesAsync(RegisterLoad load, long more, Task run, string what)
    {
        long target = load.History.AcknowledgedWrites + more;
        await Deadline.WaitUntilAsync(() => load.History.AcknowledgedWrites >= target || run.IsCompleted, what, TimeSpan.FromSeconds(60));
        if (run.IsFaulted)
        {
            await run;
        }
    }

    private static VhostUserBlkClient Connect(string socket) => VhostUserBlkClient.Connect(new VhostUserBlkClientOptions
    {
        SocketPath = socket,
        QueueCount = 1,
        QueueSize = 64,
        Reconnect = false,
        ConnectTimeout = TimeSpan.FromSeconds(10),
    });

    private static int EnvironmentInt(string name, int fallback) =>
        int.TryParse(Environment.GetEnvironmentVariable(name), NumberStyles.Integer, CultureInfo.InvariantCulture, out int value) && value > 0 ? value : fallback;

    // Every replica of every extent holds the same bytes and checksums for each block the load wrote, and that is the
    // value the final read through the volume saw.
    private async Task<long> AssertReplicasEqualAsync(ClusterFixture cluster, ulong id, VolumeStatus status, RegisterLoad load)
    {
        var stores = new Dictionary<(string Node, int Device), OfflineReplica>();
        long compared = 0;
        try
        {
            foreach (var node in cluster.Nodes)
            {
                for (int d = 0; d < node.DeviceFiles.Count; d++)
                {
                    stores[(node.Id, d)] = await OfflineReplica.OpenAsync(node.DeviceFiles[d]);
                }
            }

            var written = load.WrittenBlocks();
            foreach (var (extent, replicas) in status.Extents)
            {
                long first = extent * (ExtentSize / RegisterBlock.Size);
                var mine = written.Where(b => b >= first && b < first + (ExtentSize / RegisterBlock.Size)).ToArray();
                byte[]? reference = null;
                uint[]? sums = null;
                foreach (var replica in replicas)
                {
                    Assert.True(replica.State == "in-sync", $"extent {extent} on {replica.Node}/{replica.Device} is {replica.State}: {status.Json}");
                    var store = stores[(replica.Node, replica.Device)];
                    var (readStatus, data) = store.Read(id, extent, 0, (int)ExtentSize);
                    Assert.True(readStatus == ReplicaStatus.Ok, $"extent {extent} on {replica.Node}/{replica.Device}: {readStatus}");
                    var (sumStatus, checksums) = store.Checksums(id, extent, 0, (int)ExtentSize);
                    Assert.Equal(ReplicaStatus.Ok, sumStatus);
                    foreach (long block in mine)
                    {
                        var bytes = data.AsSpan((int)((block - first) * RegisterBlock.Size), RegisterBlock.Size);
                        var seen = RegisterBlock.Decode(block, bytes);
                        var lastRead = load.History.Operations(block).Last(o => o.Kind == RegisterOperationKind.Read && o.Outcome == RegisterOutcome.Ok);
                        Assert.True(seen == lastRead.Observed, $"block {block} on {replica.Node}/{replica.Device} holds {seen}; the final read through the volume saw {lastRead.Observed}");
                        if (reference is not null)
                        {
                            Assert.True(bytes.SequenceEqual(reference.AsSpan((int)((block - first) * RegisterBlock.Size), RegisterBlock.Size)), $"block {block}: {replica.Node}/{replica.Device} differs from {replicas[0].Node}/{replicas[0].Device}");
                        }

                        compared++;
                    }

                    reference ??= data;
                    if (sums is null)
                    {
                        sums = checksums;
                    }
                    else
                    {
                        Assert.True(sums.SequenceEqual(checksums), $"extent {extent}: the checksums on {replica.Node}/{replica.Device} differ from {replicas[0].Node}/{replicas[0].Device}");
                    }
                }
            }

            output.WriteLine($"offline: {status.Extents.Count} extents x {status.Extents.Values.First().Count} replicas, {written.Length} written blocks each, equal and equal to the final reads ({compared} block copies compared)");
            return compared;
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
