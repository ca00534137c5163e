using System.Collections.Concurrent;
using System.Diagnostics;
using Hci.Core.Devices;
using Hci.Core.Replication;
using Hci.Core.Storage;

namespace Hci.Core.Tests.Storage;

public sealed class KillNineTests
{
    private const int Block = StoreHarness.Block;

    [Fact]
    public async Task AWriterKilledWithSigkillLeavesAStoreThatOpensWithEveryAcknowledgedWrite()
    {
        string path = TempFiles.DirectIoPath();
        try
        {
            var options = new BlockDeviceOptions { Engine = BlockEngine.IoUring, Path = path, Size = 64L << 20 };
            using (var device = BlockDevices.Open(options))
            {
                (await ReplicaStore.FormatAsync(device, new ReplicaStoreOptions { ExtentSize = 1 << 20, MaxVolumes = 4 })).Dispose();
            }

            var lines = new ConcurrentQueue<string>();
            int acks = 0;
            var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
            psi.ArgumentList.Add(typeof(StoreWriterProcess).Assembly.Location);
            psi.ArgumentList.Add("store-writer");
            psi.ArgumentList.Add(path);
            using var child = Process.Start(psi)!;
            var stderr = new ConcurrentQueue<string>();
            child.ErrorDataReceived += (_, e) =>
            {
                if (e.Data != null)
                {
                    stderr.Enqueue(e.Data);
                }
            };
            child.BeginErrorReadLine();
            var reader = Task.Run(async () =>
            {
                while (await child.StandardOutput.ReadLineAsync() is { } line)
                {
                    lines.Enqueue(line);
                    if (line.StartsWith("ack ", StringComparison.Ordinal))
                    {
                        Interlocked.Increment(ref acks);
                    }
                }
            });

            await Deadline.WaitUntilAsync(() => Volatile.Read(ref acks) >= 2000 || child.HasExited, "2000 acknowledged writes from the child", TimeSpan.FromSeconds(60));
            Assert.False(child.HasExited, $"the writer exited by itself: {string.Join(" | ", stderr)} {string.Join(" | ", lines.Where(l => !l.StartsWith("sub") && !l.StartsWith("ack")))}");
            child.Kill(); // SIGKILL on Linux
            await child.WaitForExitAsync().WaitAsync(Deadline.Default);
            await reader.WaitAsync(Deadline.Default); // what it printed before it died

            // The newest acknowledged write of each block must read back (writes in flight together never overlap).
            var writes = new Dictionary<long, (long Extent, long Offset, int Blocks)>();
            var newestAcked = new Dictionary<(long Extent, long Block), long>();
            foreach (string line in lines)
            {
                var f = line.Split(' ');
                if (f[0] == "sub")
                {
                    writes[long.Parse(f[1])] = (long.Parse(f[2]), long.Parse(f[3]), int.Parse(f[4]));
                }
                else if (f[0] == "ack")
                {
                    long id = long.Parse(f[1]);
                    var w = writes[id];
                    for (int b = 0; b < w.Blocks; b++)
                    {
                        var key = (w.Extent, (w.Offset / Block) + b);
                        newestAcked[key] = Math.Max(id, newestAcked.GetValueOrDefault(key, -1));
                    }
                }
            }

            Assert.True(newestAcked.Count > 0);
            using var reopened = BlockDevices.Open(new BlockDeviceOptions { Engine = BlockEngine.IoUring, Path = path });
            using var store = await ReplicaStore.OpenAsync(reopened);
            Verify(store, newestAcked);
        }
        finally
        {
            File.Delete(path);
        }
    }

    private static void Verify(ReplicaStore store, Dictionary<(long Extent, long Block), long> newestAcked)
    {
        using var h = new StoreHarness(store);
        foreach (var ((extent, block), id) in newestAcked)
        {
            Assert.Equal(ReplicaStatus.Ok, h.Read(StoreWriterProcess.Volume, extent, block * Block, Block));
            long found = Pattern.IdOf(h.Buffer.Span[..Block], StoreWriterProcess.Volume, extent, block * Block);
            Assert.True(found >= id, $"extent {extent} block {block}: holds write {found}, the newest acknowledged is {id}");
        }

        Assert.Equal(0, store.Stats.ChecksumMismatches);
    }
}
