using Hci.Transport.Vhost;
using Xunit.Abstractions;

namespace Hci.Cluster.Scenarios;

/// <summary>
/// A failover while the old owner lives on: the volume is attached elsewhere with <c>--force</c>, the writers move to
/// the new owner, and readers stay on the old owner's socket. One register history holds both clients, so any read
/// the old owner serves after the new one acknowledged a newer write is a lost write to the checker (a stale read
/// across the failover).
/// </summary>
public sealed class ForcedFailoverReadTests(ITestOutputHelper output)
{
    private const long VolumeSize = 8L << 20;

    [Fact]
    public async Task AnOldOwnerThatStillRunsAfterAForcedAttachElsewhereServesNoStaleRead()
    {
        await using var cluster = await ClusterFixture.StartAsync(3);
        try
        {
            await cluster.CreateVolumeAsync("v", VolumeSize, replicas: 3);
            string oldSocket = await cluster.AttachAsync("v", "node1");
            var load = new RegisterLoad(new RegisterHistory(), firstBlock: 0, blocks: VolumeSize / RegisterBlock.Size, writers: 8);
            using var oldClient = Connect(oldSocket);
            using (var stop = new CancellationTokenSource())
            {
                var run = load.RunAsync(oldClient, readers: 2, stop.Token);
                await WritesAsync(load, 2000, run, "writes through the first owner");
                await stop.CancelAsync();
                await run;
            }

            // Readers only on the old owner from here on; the writers move with the volume.
            using var stopOld = new CancellationTokenSource();
            var oldReaders = load.RunAsync(oldClient, readers: 4, stopOld.Token, seed: 2, write: false);
            string newSocket = await cluster.AttachAsync("v", "node2", force: true);
            using var newClient = Connect(newSocket);
            using (var stop = new CancellationTokenSource())
            {
                var run = load.RunAsync(newClient, readers: 2, stop.Token, seed: 3);
                await WritesAsync(load, 3000, run, "writes through the new owner");
                await stop.CancelAsync();
                await run;
            }

            await stopOld.CancelAsync();
            await oldReaders;
            var result = RegisterChecker.Check(load.History);
            output.WriteLine(result.ToString());
            output.WriteLine($"old owner's client: first errors: {load.Errors.Split('\n').FirstOrDefault()}");
            Assert.True(result.IsValid, $"{result}\n{load.Errors}");
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
}
