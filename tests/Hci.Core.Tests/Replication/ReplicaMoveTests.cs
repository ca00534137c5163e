using System.Collections.Concurrent;
using Hci.Core.Cluster;
using Hci.Core.Replication;
using Hci.Testing;
using Hci.Testing.Replication;
using Xunit;

namespace Hci.Core.Tests.Replication;

/// <summary>
/// Replica moves (the primitive under rebuild and rebalance) on real replica stores of four in-process nodes: the
/// volume's extents live on node1 to node3 and move from node3 to node4 while the volume serves.
/// </summary>
public sealed class ReplicaMoveTests
{
    private const int Block = 4096;
    private const long ExtentSize = 4L << 20;
    private const ulong VolumeId = 9;
    private const int Extents = 4;

    private static readonly ReplicaTarget Node3 = new("node3", 0, ReplicaState.InSync);
    private static readonly ReplicaTarget Node4 = new("node4", 0, ReplicaState.OutOfSync);

    [Fact]
    public async Task AReplicaReplacedUnderConcurrentWritesLosesNoAcknowledgedWriteAndItsOldSlotIsFreed()
    {
        using var cluster = await InProcessReplicaCluster.StartAsync(4);
        var control = new MemoryVolumeControl(cluster.Placement(3));
        await using var volume = await Open(cluster, control);
        for (int e = 0; e < Extents; e++)
        {
            await volume.WriteAsync(e * ExtentSize, Pattern(64 * 1024, e + 1));
        }

        // One writer per block (so each block's last acknowledged write is known), over every extent while they move.
        var acknowledged = new ConcurrentDictionary<long, byte[]>();
        using var stop = new CancellationTokenSource();
        var writer = Task.Run(async () =>
        {
            var random = new Random(5);
            int seq = 0;
            while (!stop.IsCancellationRequested)
            {
                long offset = (random.NextInt64(Extents * ExtentSize / Block)) * Block;
                var data = Pattern(Block, 1000 + seq++);
                await volume.WriteAsync(offset, data);
                acknowledged[offset] = data;
            }
        });

        var started = DateTime.UtcNow;
        for (int e = 0; e < Extents; e++)
        {
            Assert.True(await volume.ReplaceReplicaAsync(e, Node3, Node4));
        }

        double seconds = (DateTime.UtcNow - started).TotalSeconds;
        await Deadline.WaitUntilAsync(() => acknowledged.Count > 50, "the writer to have written during and after the moves");
        await stop.CancelAsync();
        await writer;
        Console.WriteLine($"moved {Extents} extents of {ExtentSize >> 20} MiB under writes in {seconds:F2} s ({Extents * ExtentSize / seconds / 1e6:F1} MB/s), {acknowledged.Count} blocks written");

        for (int e = 0; e < Extents; e++)
        {
            var set = control.Extents[e];
            Assert.Equal(["node1", "node2", "node4"], set.Select(r => r.NodeId).ToArray());
            Assert.All(set, r => Assert.Equal(ReplicaState.InSync, r.State));
            Assert.Equal(set, volume.GetExtents()[e].Replicas);
        }

        // Every acknowledged write reads back, from the volume and from the new replica itself.
        foreach (var (offset, data) in acknowledged)
        {
            var back = new byte[Block];
            await volume.ReadAsync(offset, back);
            Assert.Equal(data, back);
        }

        AssertOnReplica(cluster, "node4", acknowledged);

        for (int e = 0; e < Extents; e++)
        {
            AssertReplicasIdentical(cluster, e, ["node1", "node2", "node4"]);
        }

        var store = cluster.Node("node3").Stores[0];
        await Deadline.WaitUntilAsync(() => Enumerable.Range(0, Extents).All(e => store.FindSlot(VolumeId, e, out _) < 0), "node3's slots of the moved extents to be freed");
        Assert.Equal(Extents, volume.MovedReplicas);
    }

    [Fact]
    public async Task WhenTheSourceDiesMidCopyTheCopyGoesOnFromAnotherInSyncReplica()
    {
        using var cluster = await InProcessReplicaCluster.StartAsync(4);
        var control = new MemoryVolumeControl(cluster.Placement(3));
        await using var volume = await Open(cluster, control);
        var data = Pattern((int)ExtentSize, 3);
        await volume.WriteAsync(0, data);

        // node1 (local, the preferred source) goes away as the copy starts.
        control.BeforeStateChange = (extent, replica, state) =>
        {
            if (state == ReplicaState.Resyncing)
            {
                cluster.Connector.SetDown("node1", true);
            }
        };

        Assert.True(await volume.ReplaceReplicaAsync(0, Node3, Node4));
        Assert.True(cluster.Connector.Delivered("node2", ReplicaOperation.Read) > 0);
        Assert.Equal(["node1", "node2", "node4"], control.Extents[0].Select(r => r.NodeId).ToArray());
        Assert.Equal(ReplicaState.InSync, control.StateOf(0, 2));
        AssertReplicasIdentical(cluster, 0, ["node2", "node4"]);
        using var probe = new ReplicaProbe(cluster.Connector, "node4");
        Assert.Equal(data[..Block], probe.Read(VolumeId, 0, 0, Block).Data);
    }

    [Fact]
    public async Task WhenNoInSyncReplicaCanBeCopiedFromTheMoveFailsAndTheNewReplicaIsNeverMarkedInSync()
    {
        using var cluster = await InProcessReplicaCluster.StartAsync(4);
        var control = new MemoryVolumeControl(cluster.Placement(3));
        await using var volume = await Open(cluster, control);
        await volume.WriteAsync(0, Pattern((int)ExtentSize, 4));

        var states = new ConcurrentQueue<(int Replica, ReplicaState State)>();
        control.BeforeStateChange = (extent, replica, state) =>
        {
            states.Enqueue((replica, state));
            if (state == ReplicaState.Resyncing)
            {
                // Every replica that could be copied from goes away once the copy starts.
                cluster.Connector.SetDown("node1", true);
                cluster.Connector.SetDown("node2", true);
                cluster.Connector.SetDown("node3", true);
            }
        };

        await Assert.ThrowsAsync<ReplicationException>(() => volume.ReplaceReplicaAsync(0, Node3, Node4));

        Assert.DoesNotContain(states, s => s.Replica == 3 && s.State == ReplicaState.InSync);
        Assert.Equal(["node1", "node2", "node3"], control.Extents[0].Select(r => r.NodeId).ToArray());
        Assert.All(control.Extents[0], r => Assert.Equal(ReplicaState.InSync, r.State));
        var store = cluster.Node("node4").Stores[0];
        await Deadline.WaitUntilAsync(() => store.FindSlot(VolumeId, 0, out _) < 0, "the failed copy's slot on node4 to be freed");
    }

    [Fact]
    public async Task ARegionCopyHoldsOnlyTheWritesToItsOwnRegionAndTheHeldWriteLandsOnTheNewReplica()
    {
        using var cluster = await InProcessReplicaCluster.StartAsync(4);
        var control = new MemoryVolumeControl(cluster.Placement(3));
        await using var volume = await Open(cluster, control);
        await volume.WriteAsync(0, Pattern((int)ExtentSize, 7));

        // The copy of region 0 (the first one copied) stalls at its read from the in-sync replicas.
        foreach (var node in new[] { "node1", "node2", "node3" })
        {
            cluster.Connector.HoldBackground(node, true);
        }

        long regionSize = ExtentSize / ReplicaGeometry.RegionsPerExtent;
        var held = Pattern(Block, 8);
        var other = Pattern(Block, 9);
        var move = volume.ReplaceReplicaAsync(0, Node3, Node4);
        Task heldWrite;
        try
        {
            await Deadline.WaitUntilAsync(() => new[] { "node1", "node2", "node3" }.Sum(n => cluster.Connector.Held(n)) > 0, "the copy of region 0 to stall");

            // A write to region 0 waits for the copy; a write to another region of the same extent does not.
            heldWrite = volume.WriteAsync(Block, held).AsTask();
            await volume.WriteAsync(5 * regionSize, other).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
            Assert.False(heldWrite.IsCompleted, "a write to the region being copied completed while its copy was stalled");
            Assert.False(move.IsCompleted);
        }
        finally
        {
            foreach (var node in new[] { "node1", "node2", "node3" })
            {
                cluster.Connector.HoldBackground(node, false);
            }
        }

        await heldWrite.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.True(await move.WaitAsync(TimeSpan.FromSeconds(60)));
        Assert.Equal(["node1", "node2", "node4"], control.Extents[0].Select(r => r.NodeId).ToArray());
        AssertOnReplica(cluster, "node4", new Dictionary<long, byte[]> { [Block] = held, [5 * regionSize] = other });
        AssertReplicasIdentical(cluster, 0, ["node1", "node2", "node4"]);
    }

    [Fact]
    public async Task ADetachCancelsAMoveInFlightAndWaitsForItsRollBackAndTheFreedSlotBeforeClosing()
    {
        using var cluster = await InProcessReplicaCluster.StartAsync(4);
        var control = new MemoryVolumeControl(cluster.Placement(3));
        var volume = await Open(cluster, control);
        try
        {
            await volume.WriteAsync(0, Pattern((int)ExtentSize, 5));
            foreach (var node in new[] { "node1", "node2", "node3" })
            {
                cluster.Connector.HoldBackground(node, true);
            }

            var node4 = cluster.Node("node4").Stores[0];
            long regionSize = ExtentSize / ReplicaGeometry.RegionsPerExtent;
            var move = volume.ReplaceReplicaAsync(0, Node3, Node4);
            Task detach;
            try
            {
                // The move's copy stalls at its first region; a client write elsewhere in the extent gives node4 a slot.
                await Deadline.WaitUntilAsync(() => new[] { "node1", "node2", "node3" }.Sum(n => cluster.Connector.Held(n)) > 0, "the copy of region 0 to stall");
                await volume.WriteAsync(5 * regionSize, Pattern(Block, 6));
                Assert.True(node4.FindSlot(VolumeId, 0, out _) >= 0, "the write did not reach the joining replica");

                // The owner detaches (the volume moves elsewhere): the move is cancelled, and the detach waits for it.
                detach = volume.DetachAsync();
                await Deadline.WaitUntilAsync(() => volume.MovesClosed || detach.IsCompleted, "the detach to stop the moves");
                Assert.False(detach.IsCompleted, "the detach completed while a replica move was still copying");
            }
            finally
            {
                foreach (var node in new[] { "node1", "node2", "node3" })
                {
                    cluster.Connector.HoldBackground(node, false);
                }
            }

            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => move.WaitAsync(TimeSpan.FromSeconds(30)));
            await detach.WaitAsync(TimeSpan.FromSeconds(30));

            // Rolled back before the control channels closed: the record as before, node4's slot freed.
            Assert.Equal(["node1", "node2", "node3"], control.Extents[0].Select(r => r.NodeId).ToArray());
            Assert.All(control.Extents[0], r => Assert.Equal(ReplicaState.InSync, r.State));
            Assert.True(node4.FindSlot(VolumeId, 0, out _) < 0, "node4 still holds the slot of the cancelled move");
            var refused = await Assert.ThrowsAsync<ReplicationException>(() => volume.ReplaceReplicaAsync(0, Node3, Node4));
            Assert.Contains("detaching", refused.Message, StringComparison.Ordinal);
        }
        finally
        {
            await volume.DisposeAsync();
        }
    }

    [Fact]
    public async Task AFlushThatFailsOnAReplicaAfterAMoveChangedTheFlushTargetsIsChargedToThatReplica()
    {
        using var cluster = await InProcessReplicaCluster.StartAsync(4);
        var control = new MemoryVolumeControl(cluster.Placement(3));
        await using var volume = await Open(cluster, control);
        await volume.WriteAsync(0, Pattern((int)ExtentSize, 12));

        // A flush is sent to node1, node2 and node3 (the third target); node3's answer is held.
        cluster.Connector.HoldFlushes("node3", true);
        var flush = volume.FlushAsync().AsTask();
        await Deadline.WaitUntilAsync(() => cluster.Connector.Held("node3") > 0, "the flush to node3 to be held");

        // Meanwhile node3's replica moves to node4: the volume's flush targets become node1, node2, node4.
        Assert.True(await volume.ReplaceReplicaAsync(0, Node3, Node4));
        Assert.Equal(["node1", "node2", "node4"], control.Extents[0].Select(r => r.NodeId).ToArray());

        // node3's flush then fails. It is node3's failure (no extent holds it now), not the third target's of today.
        var marks = new ConcurrentQueue<(long Extent, int Replica, ReplicaState State)>();
        control.BeforeStateChange = (extent, replica, state) => marks.Enqueue((extent, replica, state));
        cluster.Connector.SetDown("node3", true);
        cluster.Connector.HoldFlushes("node3", false);

        // The held request goes at the channel's next poll: a read makes the volume's queue poll its channels.
        await volume.ReadAsync(0, new byte[Block]);
        await flush.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Empty(marks);
        Assert.All(control.Extents[0], r => Assert.Equal(ReplicaState.InSync, r.State));
    }

    [Fact]
    public async Task ASweepFreesTheSlotsOfExtentsWhoseSetsLeftAStoreAndKeepsEveryReplicasSlot()
    {
        using var cluster = await InProcessReplicaCluster.StartAsync(4);
        var control = new MemoryVolumeControl(cluster.Placement(3));
        await using var volume = await Open(cluster, control);
        for (int e = 0; e < 4; e++)
        {
            await volume.WriteAsync(e * ExtentSize, Pattern(Block, 20 + e));
        }

        Assert.True(await volume.ReplaceReplicaAsync(0, Node3, Node4));
        var node3 = cluster.Node("node3").Stores[0];
        await Deadline.WaitUntilAsync(() => node3.FindSlot(VolumeId, 0, out _) < 0, "node3's slot of extent 0 to be freed after the move");

        // As if node3 had been away when that slot was to be freed: it holds extent 0 again, outside extent 0's set.
        using (var probe = new ReplicaProbe(cluster.Connector, "node3"))
        {
            Assert.Equal(ReplicaStatus.Ok, probe.Write(VolumeId, 0, 0, Pattern(Block, 30)));
        }

        Assert.True(node3.FindSlot(VolumeId, 0, out _) >= 0);
        var kept = control.Extents.Where(e => e.Value.Any(r => r.NodeId == "node3")).Select(e => e.Key).ToArray();
        Assert.NotEmpty(kept);

        Assert.Equal(1, await volume.DropOrphanSlotsAsync("node3", 0));
        Assert.True(node3.FindSlot(VolumeId, 0, out _) < 0, "the orphaned slot is still there");
        Assert.All(kept, e => Assert.True(node3.FindSlot(VolumeId, e, out _) >= 0, $"node3's replica of extent {e} lost its slot"));

        // Nothing else is an orphan: a second sweep, and one of a node that holds only replicas, free nothing.
        Assert.Equal(0, await volume.DropOrphanSlotsAsync("node3", 0));
        Assert.Equal(0, await volume.DropOrphanSlotsAsync("node1", 0));
        AssertReplicasIdentical(cluster, 0, ["node1", "node2", "node4"]);
        foreach (var e in kept)
        {
            AssertReplicasIdentical(cluster, e, [.. control.Extents[e].Select(r => r.NodeId)]);
        }
    }

    [Fact]
    public async Task AMoveCopiesNoFasterThanTheRecoveryRate()
    {
        using var cluster = await InProcessReplicaCluster.StartAsync(4);
        var control = new MemoryVolumeControl(cluster.Placement(3));
        var clock = new PendingTimerTimeProvider();
        const long rate = 1L << 20;
        await using var volume = await Open(cluster, control, recoveryRate: rate, time: clock);
        var data = Pattern((int)ExtentSize, 11);
        await volume.WriteAsync(0, data);
        int idle = clock.Pending; // the background scrub's timer

        // The clock moves only while the copy waits for its rate, one region's time at a time.
        long regionSize = ExtentSize / ReplicaGeometry.RegionsPerExtent;
        var start = clock.GetUtcNow();
        var move = volume.ReplaceReplicaAsync(0, Node3, Node4);
        while (true)
        {
            await Deadline.WaitUntilAsync(() => move.IsCompleted || clock.Pending > idle, "the move to wait for its rate or finish");
            if (move.IsCompleted)
            {
                break;
            }

            clock.Advance(TimeSpan.FromSeconds((double)regionSize / rate));
        }

        Assert.True(await move);
        double took = (clock.GetUtcNow() - start).TotalSeconds;
        double expected = (double)(ExtentSize - regionSize) / rate;
        Assert.True(took >= expected && took <= expected + 1, $"a 4 MiB extent at 1 MiB/s took {took} s of the clock (expected about {expected} s)");
        AssertReplicasIdentical(cluster, 0, ["node1", "node2", "node4"]);
    }

    [Fact]
    public async Task AnInSyncReplicaCannotLeaveBeforeItsReplacementIsInSync()
    {
        using var cluster = await InProcessReplicaCluster.StartAsync(3);
        var control = new MemoryVolumeControl(cluster.Placement(3));
        await using var volume = await Open(cluster, control);
        await volume.WriteAsync(0, Pattern(Block, 5));

        await Assert.ThrowsAsync<ReplicationException>(() => volume.RemoveReplicaAsync(0, Node3, minInSyncLeft: 3));
        Assert.Equal(3, control.Extents[0].Length);
        await Assert.ThrowsAsync<ClusterCatalogException>(() => control.SetReplicasAsync(0, [.. control.Extents[0].Take(2)], CancellationToken.None).AsTask());
    }

    private static Task<ReplicatedVolume> Open(InProcessReplicaCluster cluster, MemoryVolumeControl control, long recoveryRate = 0, TimeProvider? time = null)
        => ReplicatedVolume.OpenAsync(
            new ReplicatedVolumeSpec
            {
                Name = "moving",
                VolumeId = VolumeId,
                Size = 16 * ExtentSize,
                Epoch = 1,
                MinInSync = 1,
                LocalNodeId = "node1",
                Extents = control.Snapshot(),
            },
            cluster.Connector,
            control,
            new ReplicatedVolumeOptions
            {
                ResyncInterval = TimeSpan.FromMilliseconds(100),
                CleanAfter = TimeSpan.FromMilliseconds(200),
                BufferAlignment = 1,
                RecoveryBytesPerSecond = recoveryRate,
                RecoveryLatencyFactor = 0,
                TimeProvider = time ?? TimeProvider.System,
            });

    // A probe's queue belongs to one thread: this runs without an await from its creation to its disposal.
    private static void AssertOnReplica(InProcessReplicaCluster cluster, string node, IReadOnlyDictionary<long, byte[]> blocks)
    {
        using var probe = new ReplicaProbe(cluster.Connector, node);
        foreach (var (offset, data) in blocks)
        {
            var (status, onReplica) = probe.Read(VolumeId, offset / ExtentSize, offset % ExtentSize, Block);
            Assert.Equal(ReplicaStatus.Ok, status);
            Assert.Equal(data, onReplica);
        }
    }

    private static void AssertReplicasIdentical(InProcessReplicaCluster cluster, long extent, string[] nodes)
    {
        byte[]? first = null;
        foreach (var node in nodes)
        {
            using var probe = new ReplicaProbe(cluster.Connector, node);
            var data = new byte[ExtentSize];
            for (int chunk = 0; chunk < ExtentSize; chunk += ReplicaGeometry.MaxTransfer)
            {
                var (status, part) = probe.Read(VolumeId, extent, chunk, ReplicaGeometry.MaxTransfer);
                Assert.Equal(ReplicaStatus.Ok, status);
                part.CopyTo(data, chunk);
            }

            if (first == null)
            {
                first = data;
                continue;
            }

            int at = first.AsSpan().CommonPrefixLength(data);
            Assert.True(at == first.Length, $"extent {extent} on {node} differs from {nodes[0]} at byte {at}");
        }
    }

    private static byte[] Pattern(int length, int seed)
    {
        var data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }
}
