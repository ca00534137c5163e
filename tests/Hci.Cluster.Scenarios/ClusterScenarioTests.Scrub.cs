using System.Text.Json;

namespace Hci.Cluster.Scenarios;

// Scrub on a cluster of real processes: bits flipped in the device files of random replicas are all found by
// `hci volume scrub` (run on the owner) and repaired from the good copies.
public sealed partial class ClusterScenarioTests
{
    [Fact]
    public async Task BitsFlippedInRandomBlocksOfRandomReplicasAreAllFoundByHciVolumeScrubAndRepaired()
    {
        await using var cluster = await ClusterFixture.StartAsync(3);
        try
        {
            const long size = 16 * MiB;
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

            // The replica stores' allocation tables say where each extent lies in the device files: stop the nodes to
            // read them. The owner goes first: its clean detach marks every region clean on all replicas, so no store
            // reconciles (and so legitimises) a damaged block when it opens again.
            await StopAllAsync(cluster);
            var random = new Random(20261202);
            var damaged = new HashSet<(long Extent, long Offset, string Node)>();
            string[] nodes = ["node1", "node2", "node3"];
            foreach (long block in everything.OrderBy(_ => random.Next()).Take(40))
            {
                // One or two random replicas of each block (never all three: a good copy is left).
                foreach (var node in nodes.OrderBy(_ => random.Next()).Take(random.Next(1, 3)))
                {
                    damaged.Add((block / BlocksPerExtent, block % BlocksPerExtent * PatternLoad.BlockSize, node));
                }
            }

            foreach (var group in damaged.GroupBy(d => d.Node))
            {
                string file = cluster[group.Key].DeviceFiles[0];
                var offsets = new List<long>();
                await using (var replica = await OfflineReplica.OpenAsync(file))
                {
                    offsets.AddRange(group.Select(d => replica.DataOffset(id, d.Extent) + d.Offset + random.Next(PatternLoad.BlockSize)));
                }

                foreach (long offset in offsets)
                {
                    OfflineReplica.FlipBits(file, offset);
                }
            }

            await cluster["node2"].StartAsync();
            await cluster["node3"].StartAsync();
            int mark = owner.LineCount;
            await owner.StartAsync();
            await ClusterFixture.WaitServedAsync(owner, "v", mark);

            var scrub = await cluster.TryHciAsync("volume", "scrub", "v", "--json");
            output.WriteLine($"hci volume scrub v --json (exit {scrub.ExitCode}):\n{scrub.Output}{scrub.Error}");
            Assert.Equal(0, scrub.ExitCode);
            using (var doc = JsonDocument.Parse(scrub.Output))
            {
                var root = doc.RootElement;
                Assert.Equal("Done", root.GetProperty("state").GetString());
                Assert.Equal("node1", root.GetProperty("node").GetString());
                Assert.Equal(size / ExtentSize, root.GetProperty("extentsChecked").GetInt64());
                Assert.Equal(3 * size, root.GetProperty("bytesChecked").GetInt64());
                Assert.Equal(damaged.Count, root.GetProperty("badBlocks").GetInt64());
                Assert.Equal(damaged.Count, root.GetProperty("repairedBlocks").GetInt64());
                Assert.Equal(0, root.GetProperty("divergingBlocks").GetInt64());
                Assert.Equal(0, root.GetProperty("unrecoverableBlocks").GetInt64());
                var found = root.GetProperty("findings").EnumerateArray()
                    .Select(f => (f.GetProperty("extent").GetInt64(), f.GetProperty("offset").GetInt64(), f.GetProperty("nodeId").GetString()!))
                    .ToHashSet();
                Assert.True(damaged.SetEquals(found), $"damaged {damaged.Count} copies, the scrub listed {found.Count}: missed {string.Join(", ", damaged.Except(found))}; extra {string.Join(", ", found.Except(damaged))}");
            }

            Assert.Equal(damaged.Count, owner.LinesContaining("scrub found extent", mark).Count);

            using (var client = Connect(socket))
            {
                var reader = load.WithDevice(client);
                Assert.True(await reader.VerifyAsync(everything) == 0, reader.Errors);
            }

            // The read-back repaired nothing (the scrub left nothing to repair), and a second scrub finds nothing.
            Assert.Empty(owner.LinesContaining("Volume v: repaired extent", mark));
            var again = await cluster.TryHciAsync("volume", "scrub", "v");
            output.WriteLine(again.Output);
            Assert.Equal(0, again.ExitCode);
            Assert.Contains("found 0 bad and 0 diverging block copies", again.Output, StringComparison.Ordinal);

            await StopAllAsync(cluster);
            await AssertReplicasHoldAsync(cluster, id, healthy, load, nodes);
        }
        catch
        {
            output.WriteLine(cluster.Tails);
            throw;
        }
    }

    [Fact]
    public async Task ScrubbingADetachedVolumeIsRefusedWithWhatToDo()
    {
        await using var cluster = await ClusterFixture.StartAsync(3);
        try
        {
            await cluster.CreateVolumeAsync("v", 8 * MiB);
            var result = await cluster.TryHciAsync("volume", "scrub", "v");
            Assert.Equal(1, result.ExitCode);
            Assert.Contains("detached", result.Error, StringComparison.Ordinal);
            Assert.Contains("hci volume attach v --node", result.Error, StringComparison.Ordinal);
        }
        catch
        {
            output.WriteLine(cluster.Tails);
            throw;
        }
    }
}
