using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Hci.Cluster.Scenarios;

// Rebuild: a node lost for good under a write load; after the rebuild interval (seconds here, 10 minutes by default)
// the owner moves its replicas to the live nodes by placement.
public sealed partial class ClusterScenarioTests
{
    [Fact]
    public async Task ANodeKilledForGoodUnderLoadHasItsReplicasRebuiltOnTheLiveNodesAfterTheInterval()
    {
        await using var cluster = await ClusterFixture.StartAsync(4, nodeArguments: ["--rebuild-after", "5s"]);
        try
        {
            const long size = 64 * MiB;
            ulong id = await cluster.CreateVolumeAsync("v", size);
            string socket = await cluster.AttachAsync("v", "node1");
            var everything = PatternLoad.Range(0, size / PatternLoad.BlockSize);
            var owner = cluster["node1"];
            var victim = cluster["node3"];
            using var client = Connect(socket);
            var load = new PatternLoad(client, everything.Length);
            await load.FillAsync(everything);
            Assert.True(load.FailedWrites == 0, load.Errors);
            var before = await cluster.WaitHealthyAsync("v");
            int onVictim = before.Extents.Count(e => e.Value.Any(r => r.Node == "node3"));
            Assert.True(onVictim > 0, before.Json);

            using var stop = new CancellationTokenSource();
            long started = load.Writes;
            var writing = load.WriteAsync(everything, depth: 16, stop.Token);
            await Deadline.WaitUntilAsync(() => load.Writes > started + 500 || writing.IsCompleted, "the client to write at depth");
            int mark = owner.LineCount;
            victim.Kill();
            var killedAt = cluster.Now;

            // Every node and hci agree on the countdown: hci cluster status shows node3 down with its rebuild time.
            double? countdown = null;
            await Hci.Testing.Deadline.WaitUntilAsync(
                async () =>
                {
                    using var doc = JsonDocument.Parse(await cluster.HciAsync("cluster", "status", "--json"));
                    foreach (var down in doc.RootElement.GetProperty("down").EnumerateArray().Where(d => d.GetProperty("node").GetString() == "node3"))
                    {
                        countdown = down.GetProperty("secondsToRebuild").GetDouble();
                    }

                    return countdown is not null;
                },
                "hci cluster status to show node3 down",
                TimeSpan.FromSeconds(60),
                every: TimeSpan.FromMilliseconds(100));

            Assert.True(countdown is >= 0 and <= 5, $"countdown {countdown} s");
            output.WriteLine($"node3 killed at {killedAt.TotalSeconds:F2} s; at {cluster.Now.TotalSeconds:F2} s hci cluster status showed it down with {countdown:F1} s to its rebuild");

            // The rebuild: the volume becomes healthy with no replica on node3, while the client keeps writing.
            VolumeStatus? rebuilt = null;
            string progress = string.Empty;
            VolumeStatus? current = null;
            await Hci.Testing.Deadline.WaitUntilAsync(
                async () =>
                {
                    if (writing.IsCompleted)
                    {
                        return true; // the client stopped: said below
                    }

                    current = await cluster.VolumeStatusAsync("v");
                    if (current.Healthy && current.Extents.Values.All(r => r.Count == 3 && r.All(x => x.Node != "node3")))
                    {
                        rebuilt = current;
                        return true;
                    }

                    string text = await cluster.HciAsync("cluster", "status");
                    progress = text.Split('\n').FirstOrDefault(l => l.StartsWith("rebuild v", StringComparison.Ordinal)) ?? progress;
                    return false;
                },
                "the volume to be rebuilt without node3",
                TimeSpan.FromSeconds(180),
                () => $"{current?.Json}\n{cluster.Tails}",
                TimeSpan.FromMilliseconds(100));

            var rebuiltAt = cluster.Now;
            long writesDuring = load.Writes - started;
            await stop.CancelAsync();
            await writing;
            Assert.True(rebuilt is not null, $"the client stopped: {load.Errors}");
            Assert.True(load.FailedWrites == 0, $"{load.FailedWrites} writes failed: {load.Errors}\n{cluster.Tails}");

            var done = await owner.WaitForLineAsync(l => l.Contains("rebuild of volume v done", StringComparison.Ordinal), "the owner to log the rebuild", mark);
            var match = RebuildDoneLine().Match(done.Text);
            Assert.True(match.Success, done.Text);
            string status = await cluster.HciAsync("cluster", "status");
            output.WriteLine($"last progress line seen: {progress}");
            output.WriteLine($"owner: {done.Text}");
            output.WriteLine($"rebuild: {onVictim} extents were on node3; volume healthy without node3 {(rebuiltAt - killedAt).TotalSeconds:F1} s after the kill (interval 5 s); rebuild MB/s {match.Groups["mbps"].Value}; {writesDuring} client writes meanwhile, 0 failed");
            output.WriteLine(status);
            Assert.Contains("rebuild of v", status, StringComparison.Ordinal);

            Assert.True(await load.VerifyAsync(everything) == 0, load.Errors);
            client.Dispose();
            var final = await cluster.VolumeStatusAsync("v");
            await StopAllAsync(cluster);
            await AssertReplicasHoldAsync(cluster, id, final, load, ["node1", "node2", "node4"]);
        }
        catch
        {
            output.WriteLine(cluster.Tails);
            throw;
        }
    }

    [GeneratedRegex(@"rebuild of volume v done: (?<done>\d+) extent replicas moved, (?<failed>\d+) failed .*, (?<bytes>\d+) bytes in (?<seconds>[\d.]+) s, (?<mbps>[\d.]+) MB/s")]
    private static partial Regex RebuildDoneLine();
}
