using Hci.Core.Blocks;
using Hci.Core.Buffers;
using Hci.Core.Cluster;
using Hci.Core.Replication;
using Hci.Testing;
using Hci.Testing.Replication;
using Xunit;

namespace Hci.Core.Tests.Replication;

/// <summary>
/// The owner's replication logic on real replica stores of three in-process nodes (memory devices, no network),
/// with faults injected between the owner and the nodes.
/// </summary>
public sealed class ReplicatedVolumeTests
{
    private const int Block = 4096;
    private const long ExtentSize = 4L << 20;
    private const long RegionSize = ExtentSize / 64;
    private const ulong VolumeId = 7;

    [Fact]
    public async Task WritesReachEveryReplicaAndReadBack()
    {
        using var cluster = await InProcessReplicaCluster.StartAsync(3);
        var control = new MemoryVolumeControl(cluster.Placement(3));
        await using var volume = await Open(cluster, control, epoch: 1);

        var data = Pattern(3 * Block, 1);
        await volume.WriteAsync(ExtentSize - Block, data); // spans extents 0 and 1
        var back = new byte[3 * Block];
        await volume.ReadAsync(ExtentSize - Block, back);
        Assert.Equal(data, back);

        foreach (var node in cluster.NodeIds)
        {
            using var probe = new ReplicaProbe(cluster.Connector, node);
            Assert.Equal(data[..Block], Read(probe, 0, ExtentSize - Block, Block));
            Assert.Equal(data[Block..], Read(probe, 1, 0, 2 * Block));
        }
    }

    [Fact]
    public async Task AnUnwrittenExtentReadsAsZerosWithoutReplicaIo()
    {
        using var cluster = await InProcessReplicaCluster.StartAsync(3);
        var control = new MemoryVolumeControl(cluster.Placement(3));
        await using var volume = await Open(cluster, control, epoch: 1);

        var back = Pattern(64 * 1024, 9);
        await volume.ReadAsync(5 * ExtentSize, back);
        Assert.All(back, b => Assert.Equal(0, b));
        foreach (var node in cluster.NodeIds)
        {
            Assert.Equal(0, cluster.Connector.Delivered(node, ReplicaOperation.Read));
        }

        Assert.Empty(control.Extents);
    }

    [Fact]
    public async Task AReplicaThatStopsAnsweringIsMarkedOutOfSyncAndWritesGoOnThenOnlyTheMissedRegionsAreResynced()
    {
        using var cluster = await InProcessReplicaCluster.StartAsync(3);
        var control = new MemoryVolumeControl(cluster.Placement(3));
        await using var volume = await Open(cluster, control, epoch: 1, resync: TimeSpan.FromMilliseconds(50));

        // Allocate two extents with every replica in sync.
        await volume.WriteAsync(0, Pattern(Block, 1));
        await volume.WriteAsync(ExtentSize, Pattern(Block, 2));

        cluster.Connector.SetDown("node3", true);

        // Writes in three regions of extent 0 and one of extent 1 while node3 is away: none fails.
        var written = new Dictionary<long, byte[]>();
        foreach (long offset in new[] { 0L, RegionSize * 5, (RegionSize * 5) + Block, RegionSize * 63, ExtentSize + (RegionSize * 2) })
        {
            var data = Pattern(Block, (int)(offset / Block) + 10);
            await volume.WriteAsync(offset, data);
            written[offset] = data;
        }

        Assert.Equal(ReplicaState.OutOfSync, control.StateOf(0, 2));
        Assert.Equal(ReplicaState.OutOfSync, control.StateOf(1, 2));
        Assert.Equal(ReplicaState.InSync, control.StateOf(0, 0));
        var status = volume.GetExtents();
        Assert.Equal(3, status[0].MissedRegions[2]); // regions 0, 5, 63
        Assert.Equal(1, status[1].MissedRegions[2]); // region 2

        long before = cluster.Connector.DeliveredBytes("node3", ReplicaOperation.Write);
        cluster.Connector.SetDown("node3", false);
        await Deadline.WaitUntilAsync(() => control.StateOf(0, 2) == ReplicaState.InSync && control.StateOf(1, 2) == ReplicaState.InSync, "node3 to be resynced");

        // Only the missed regions went to node3: 4 regions of 64 KiB.
        long resynced = cluster.Connector.DeliveredBytes("node3", ReplicaOperation.Write) - before;
        Assert.Equal(4 * RegionSize, resynced);
        Assert.Equal(4 * RegionSize, volume.Stats.ResyncedBytes);

        using var probe = new ReplicaProbe(cluster.Connector, "node3");
        foreach (var (offset, data) in written)
        {
            Assert.Equal(data, Read(probe, offset / ExtentSize, offset % ExtentSize, Block));
        }

        await AssertReplicasIdentical(cluster, 0);
        await AssertReplicasIdentical(cluster, 1);
    }

    [Fact]
    public async Task AStaleReplicaIsNeverReadBeforeItIsResynced()
    {
        using var cluster = await InProcessReplicaCluster.StartAsync(3);

        // node1 (the local one, read first) is the replica that will miss a write.
        var control = new MemoryVolumeControl(cluster.Placement(3));
        await using var volume = await Open(cluster, control, epoch: 1, resync: TimeSpan.FromHours(1));
        await volume.WriteAsync(0, Pattern(Block, 1));
        cluster.Connector.SetDown("node1", true);
        await volume.WriteAsync(0, Pattern(Block, 2));
        cluster.Connector.SetDown("node1", false);

        long readsBefore = cluster.Connector.Delivered("node1", ReplicaOperation.Read);
        var back = new byte[Block];
        for (int i = 0; i < 200; i++)
        {
            await volume.ReadAsync(0, back);
            Assert.Equal(Pattern(Block, 2), back);
        }

        Assert.Equal(readsBefore, cluster.Connector.Delivered("node1", ReplicaOperation.Read));
    }

    [Fact]
    public async Task BelowTheMinimumInSyncWritesFailWithAnIoError()
    {
        using var cluster = await InProcessReplicaCluster.StartAsync(3);
        var control = new MemoryVolumeControl(cluster.Placement(3));
        await using var volume = await Open(cluster, control, epoch: 1, minInSync: 2);
        await volume.WriteAsync(0, Pattern(Block, 1));
        cluster.Connector.SetDown("node2", true);
        cluster.Connector.SetDown("node3", true);

        var e = await Assert.ThrowsAsync<BlockDeviceException>(() => volume.WriteAsync(0, Pattern(Block, 2)).AsTask());
        Assert.Equal(Errno.EIO, e.Errno);
    }

    [Fact]
    public async Task AWriteIsNotAcknowledgedWhenTheFailedReplicaCannotBeMarkedOutOfSync()
    {
        using var cluster = await InProcessReplicaCluster.StartAsync(3);
        var control = new MemoryVolumeControl(cluster.Placement(3));
        await using var volume = await Open(cluster, control, epoch: 1);
        await volume.WriteAsync(0, Pattern(Block, 1));
        cluster.Connector.SetDown("node3", true);
        control.Unreachable = true;

        await Assert.ThrowsAsync<BlockDeviceException>(() => volume.WriteAsync(0, Pattern(Block, 2)).AsTask());
    }

    [Fact]
    public async Task ANewOwnerFencesTheOldOneOnEveryReplica()
    {
        using var cluster = await InProcessReplicaCluster.StartAsync(3);
        var control = new MemoryVolumeControl(cluster.Placement(3));
        await using var old = await Open(cluster, control, epoch: 1);
        await old.WriteAsync(0, Pattern(Block, 1));

        await using var next = await Open(cluster, control, epoch: 2);
        await Assert.ThrowsAsync<BlockDeviceException>(() => old.WriteAsync(0, Pattern(Block, 2)).AsTask());
        Assert.True(old.IsFenced);

        // Every replica refuses the old epoch, even for an extent the new owner never touched.
        foreach (var node in cluster.NodeIds)
        {
            using var probe = new ReplicaProbe(cluster.Connector, node);
            Assert.Equal(ReplicaStatus.StaleEpoch, probe.Write(VolumeId, 3, 0, Pattern(Block, 3), epoch: 1));
            Assert.Equal(2UL, probe.ObservedEpoch);
        }

        await next.WriteAsync(0, Pattern(Block, 4));
        var back = new byte[Block];
        await next.ReadAsync(0, back);
        Assert.Equal(Pattern(Block, 4), back);
    }

    [Fact]
    public async Task ANewOwnerRefusesAnExtentWhoseOnlyReplicaWithItsNewestWritesIsUnreachableAndChangesNothing()
    {
        // Vitastor's tests/test_splitbrain.sh: two replicas; one is away while the other takes a write; then the one
        // with the newest write is lost and the stale one comes back. The stale replica must not be served.
        using var cluster = await InProcessReplicaCluster.StartAsync(3);
        var control = new MemoryVolumeControl(cluster.Placement(2));
        await using (var old = await Open(cluster, control, epoch: 1, minInSync: 1))
        {
            await old.WriteAsync(0, Pattern(Block, 1));
            cluster.Connector.SetDown("node2", true);
            await old.WriteAsync(0, Pattern(Block, 2)); // only node1 has it: node2 is marked out of sync first
            Assert.Equal(ReplicaState.OutOfSync, control.StateOf(0, 1));
        }

        cluster.Connector.SetDown("node1", true);
        cluster.Connector.SetDown("node2", false);
        int changes = control.StateChanges;
        var refused = await Assert.ThrowsAsync<ReplicationException>(() => Open(cluster, control, epoch: 2, minInSync: 1));
        Assert.Contains("extent 0 has no reachable in-sync replica", refused.Message);
        Assert.Contains("node1/0", refused.Message);

        // Nothing changed: node1 still holds the only in-sync copy, so the volume can come back once node1 does.
        Assert.Equal(changes, control.StateChanges);
        Assert.Equal(ReplicaState.InSync, control.StateOf(0, 0));
        Assert.Equal(ReplicaState.OutOfSync, control.StateOf(0, 1));

        cluster.Connector.SetDown("node1", false);
        await using var next = await Open(cluster, control, epoch: 3, minInSync: 1);
        var back = new byte[Block];
        await next.ReadAsync(0, back);
        Assert.Equal(Pattern(Block, 2), back);
        await Deadline.WaitUntilAsync(() => control.StateOf(0, 1) == ReplicaState.InSync, "node2 to be resynced from node1");
        using var probe = new ReplicaProbe(cluster.Connector, "node2");
        var (status, data) = probe.Read(VolumeId, 0, 0, Block, epoch: 3);
        Assert.Equal(ReplicaStatus.Ok, status);
        Assert.Equal(Pattern(Block, 2), data);
    }

    [Fact]
    public async Task ARevokedOwnerFailsEveryRequestWithAnIoError()
    {
        using var cluster = await InProcessReplicaCluster.StartAsync(3);
        var control = new MemoryVolumeControl(cluster.Placement(3));
        await using var volume = await Open(cluster, control, epoch: 1);
        await volume.WriteAsync(0, Pattern(Block, 1));
        volume.Revoke("the test says the lease is lost");
        Assert.True(volume.IsFenced);
        var write = await Assert.ThrowsAsync<BlockDeviceException>(() => volume.WriteAsync(0, Pattern(Block, 2)).AsTask());
        Assert.Equal(Errno.EIO, write.Errno);
        var read = await Assert.ThrowsAsync<BlockDeviceException>(() => volume.ReadAsync(0, new byte[Block]).AsTask());
        Assert.Equal(Errno.EIO, read.Errno);

        // Nothing reached the replicas after the revocation: every one still holds the first write.
        foreach (var node in cluster.NodeIds)
        {
            using var probe = new ReplicaProbe(cluster.Connector, node);
            var (status, data) = probe.Read(VolumeId, 0, 0, Block, epoch: 1);
            Assert.Equal(ReplicaStatus.Ok, status);
            Assert.Equal(Pattern(Block, 1), data);
        }
    }

    [Fact]
    public async Task ABlockThatFailsItsChecksumIsServedFromAnotherReplicaAndRepaired()
    {
        using var cluster = await InProcessReplicaCluster.StartAsync(3);
        var control = new MemoryVolumeControl(cluster.Placement(3));
        await using var volume = await Open(cluster, control, epoch: 1);
        var data = Pattern(4 * Block, 5);
        await volume.WriteAsync(0, data);

        // Rot one block of node1's copy (the one reads go to first) on its device.
        var store = cluster.Node("node1").Stores[0];
        int slot = store.FindSlot(VolumeId, 0, out _);
        FlipBit(cluster.Devices["node1"], store.SlotOffset(slot) + Block + 17);

        var back = new byte[4 * Block];
        await volume.ReadAsync(0, back);
        Assert.Equal(data, back);
        Assert.True(volume.Stats.ChecksumMismatches >= 1);
        await Deadline.WaitUntilAsync(() => volume.Stats.ReadRepairs >= 1, "the bad copy to be repaired");

        using var probe = new ReplicaProbe(cluster.Connector, "node1");
        Assert.Equal(data, Read(probe, 0, 0, 4 * Block));
    }

    [Fact]
    public async Task ANewOwnerReconcilesTheRegionsAPreviousOwnerLeftInFlight()
    {
        using var cluster = await InProcessReplicaCluster.StartAsync(3);
        var control = new MemoryVolumeControl(cluster.Placement(3));
        await using (var first = await Open(cluster, control, epoch: 1))
        {
            await first.WriteAsync(0, Pattern(Block, 1));
            await first.WriteAsync(ExtentSize, Pattern(Block, 1));
        }

        // A crashed owner's write that reached node2 only: the replicas differ in that region.
        using (var probe = new ReplicaProbe(cluster.Connector, "node2"))
        {
            Assert.Equal(ReplicaStatus.Ok, probe.Write(VolumeId, 0, RegionSize * 3, Pattern(Block, 8), epoch: 1));
        }

        await using var next = await Open(cluster, control, epoch: 2);
        Assert.True(next.Stats.ReconciledRegions >= 1);
        await AssertReplicasIdentical(cluster, 0, epoch: 2);
        await AssertReplicasIdentical(cluster, 1, epoch: 2);
    }

    [Fact]
    public async Task ADetachedVolumeLeavesNothingToReconcile()
    {
        using var cluster = await InProcessReplicaCluster.StartAsync(3);
        var control = new MemoryVolumeControl(cluster.Placement(3));
        var first = await Open(cluster, control, epoch: 1);
        await first.WriteAsync(0, Pattern(Block, 1));
        await first.FlushAsync();
        await first.DetachAsync();
        await first.DisposeAsync();

        await using var next = await Open(cluster, control, epoch: 2);
        Assert.Equal(0, next.Stats.ReconciledRegions);
    }

    [Fact]
    public async Task IdleExtentsLeaveTheActivityLogOnlyBeyondItsBoundAndExtentsBeingWrittenStay()
    {
        using var cluster = await InProcessReplicaCluster.StartAsync(3);
        var control = new MemoryVolumeControl(cluster.Placement(3));
        await using var volume = await Open(cluster, control, epoch: 1, activityLogExtents: 3);
        for (int e = 0; e < 5; e++)
        {
            await volume.WriteAsync(e * ExtentSize, Pattern(Block, e + 1));
        }

        Assert.Equal(5, DirtyExtents(cluster, "node2").Count);

        // Extents 0 and 1 go on being written and the other three go idle: idle ones leave the log, the least
        // recently written first (on a tie, the lowest index), only down to the bound of 3; the two being written stay.
        await Deadline.WaitUntilAsync(
            async () =>
            {
                await volume.WriteAsync(0, Pattern(Block, 6));
                await volume.WriteAsync(ExtentSize, Pattern(Block, 7));
                return DirtyExtents(cluster, "node2").Count <= 3;
            },
            "the idle extents to leave the activity log",
            detail: () => string.Join(", ", DirtyExtents(cluster, "node2").Keys),
            every: TimeSpan.FromMilliseconds(10));
        foreach (var node in cluster.NodeIds)
        {
            // The marks reach the replicas one after another.
            await Deadline.WaitUntilAsync(() => DirtyExtents(cluster, node).Keys.Order().SequenceEqual([0L, 1L, 4L]), $"extents 0, 1 and 4 to be the ones left in {node}'s log", detail: () => string.Join(", ", DirtyExtents(cluster, node).Keys));
        }
    }

    [Fact]
    public async Task AnExtentIdlePastTheLimitLeavesTheActivityLogWithinTheBound()
    {
        using var cluster = await InProcessReplicaCluster.StartAsync(3);
        var control = new MemoryVolumeControl(cluster.Placement(3));
        await using var volume = await Open(cluster, control, epoch: 1, activityLogIdleLimit: TimeSpan.FromMilliseconds(600));
        await volume.WriteAsync(0, Pattern(Block, 1));
        await volume.WriteAsync(ExtentSize, Pattern(Block, 2));
        Assert.Equal(2, DirtyExtents(cluster, "node2").Count);

        // Two extents are far below the bound of 256, and idle: they leave the log once idle for 0.6 s.
        foreach (var node in cluster.NodeIds)
        {
            await Deadline.WaitUntilAsync(() => DirtyExtents(cluster, node).Count == 0, $"the idle extents on {node} to be marked clean");
        }
    }

    [Fact]
    public async Task WithAnActivityLogOfNoExtentsEveryIdleExtentIsMarkedClean()
    {
        using var cluster = await InProcessReplicaCluster.StartAsync(3);
        var control = new MemoryVolumeControl(cluster.Placement(3));
        await using var volume = await Open(cluster, control, epoch: 1, activityLogExtents: 0);
        for (int e = 0; e < 3; e++)
        {
            await volume.WriteAsync(e * ExtentSize, Pattern(Block, e + 1));
        }

        foreach (var node in cluster.NodeIds)
        {
            await Deadline.WaitUntilAsync(() => DirtyExtents(cluster, node).Count == 0, $"every extent on {node} to be marked clean");
        }
    }

    [Fact]
    public void AnActivityLogBoundOutOfRangeIsRefusedWithWhatToFix()
    {
        foreach (int bad in new[] { -1, int.MinValue, (1 << 20) + 1, int.MaxValue })
        {
            var e = Assert.Throws<ArgumentException>(() => new ReplicatedVolumeOptions { ActivityLogExtents = bad }.Validate());
            Assert.Contains("ActivityLogExtents", e.Message);
        }

        new ReplicatedVolumeOptions { ActivityLogExtents = 1 << 20 }.Validate();
        new ReplicatedVolumeOptions { ActivityLogExtents = 0 }.Validate();

        foreach (var bad in new[] { TimeSpan.Zero, TimeSpan.FromSeconds(29), TimeSpan.FromDays(1) + TimeSpan.FromTicks(1), TimeSpan.MaxValue })
        {
            var e = Assert.Throws<ArgumentException>(() => new ReplicatedVolumeOptions { ActivityLogIdleLimit = bad }.Validate());
            Assert.Contains("ActivityLogIdleLimit", e.Message);
        }

        new ReplicatedVolumeOptions { ActivityLogIdleLimit = TimeSpan.FromSeconds(30) }.Validate();
    }

    [Fact]
    public async Task AVolumeRequestAllocatesNothingInSteadyState()
    {
        using var cluster = await InProcessReplicaCluster.StartAsync(3);
        var control = new MemoryVolumeControl(cluster.Placement(3));
        await using var volume = await Open(cluster, control, epoch: 1);
        using var buffer = new AlignedBuffer(Block);
        using var queue = volume.CreateQueue(4);
        using var request = new BlockRequest(1);
        request.Handler = new CompletionCounter();

        unsafe void Run(BlockOperation operation, long offset)
        {
            request.SetReadWrite(operation, offset, buffer.Pointer, Block);
            queue.Submit(request);
            while (request.IsInFlight)
            {
                queue.Poll(1, 10);
            }

            if (!request.Succeeded)
            {
                Assert.Fail($"{operation} failed: {request.Error} {request.Result}");
            }
        }

        for (int i = 0; i < 2000; i++)
        {
            Run(i % 2 == 0 ? BlockOperation.Write : BlockOperation.Read, (i % 64) * (long)Block);
        }

        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 10_000; i++)
        {
            Run(i % 2 == 0 ? BlockOperation.Write : BlockOperation.Read, (i % 64) * (long)Block);
        }

        long perIo = (GC.GetAllocatedBytesForCurrentThread() - before) / 10_000;
        Assert.True(perIo == 0, $"{perIo} bytes allocated per replicated I/O on the owner's queue thread");
    }

    private static Task<ReplicatedVolume> Open(InProcessReplicaCluster cluster, MemoryVolumeControl control, ulong epoch, int minInSync = 2, TimeSpan? resync = null, int activityLogExtents = 256, TimeSpan? activityLogIdleLimit = null)
        => ReplicatedVolume.OpenAsync(
            new ReplicatedVolumeSpec
            {
                Name = "vol",
                VolumeId = VolumeId,
                Size = 16 * ExtentSize,
                Epoch = epoch,
                MinInSync = minInSync,
                LocalNodeId = "node1",
                Extents = control.Snapshot(),
            },
            cluster.Connector,
            control,
            new ReplicatedVolumeOptions
            {
                ResyncInterval = resync ?? TimeSpan.FromMilliseconds(100),
                CleanAfter = TimeSpan.FromMilliseconds(200),
                ActivityLogExtents = activityLogExtents,
                ActivityLogIdleLimit = activityLogIdleLimit ?? TimeSpan.FromHours(1),
                BufferAlignment = 1,
            });

    // A probe belongs to the thread that made it: one per look.
    private static Dictionary<long, ulong> DirtyExtents(InProcessReplicaCluster cluster, string node)
    {
        using var probe = new ReplicaProbe(cluster.Connector, node);
        return probe.DirtyRegions(VolumeId);
    }

    private static async Task AssertReplicasIdentical(InProcessReplicaCluster cluster, long extent, ulong epoch = 1)
    {
        byte[]? first = null;
        uint[]? firstSums = null;
        foreach (var node in cluster.NodeIds)
        {
            using var probe = new ReplicaProbe(cluster.Connector, node);
            var data = new byte[ExtentSize];
            var sums = new uint[ExtentSize / Block];
            for (int chunk = 0; chunk < ExtentSize; chunk += ReplicaGeometry.MaxTransfer)
            {
                var (status, part) = probe.Read(VolumeId, extent, chunk, ReplicaGeometry.MaxTransfer, epoch: epoch);
                Assert.Equal(ReplicaStatus.Ok, status);
                part.CopyTo(data, chunk);
                var (sumStatus, partSums) = probe.Checksums(VolumeId, extent, chunk, ReplicaGeometry.MaxTransfer, epoch: epoch);
                Assert.Equal(ReplicaStatus.Ok, sumStatus);
                partSums.CopyTo(sums, chunk / Block);
            }

            if (first == null)
            {
                first = data;
                firstSums = sums;
            }
            else
            {
                int at = first.AsSpan().CommonPrefixLength(data);
                Assert.True(at == first.Length, $"extent {extent} on {node} differs from node1 at byte {at} (region {at / RegionSize})");
                Assert.Equal(firstSums, sums);
            }
        }

        await Task.CompletedTask;
    }

    private static byte[] Read(ReplicaProbe probe, long extent, long offset, int length)
    {
        var (status, data) = probe.Read(VolumeId, extent, offset, length, epoch: 1);
        Assert.Equal(ReplicaStatus.Ok, status);
        return data;
    }

    private static byte[] Pattern(int length, int seed)
    {
        var data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }

    private static void FlipBit(BlockDevice device, long at)
    {
        using var buffer = new AlignedBuffer(Block);
        long page = at / Block * Block;
        device.ReadAsync(page, buffer.Memory).AsTask().GetAwaiter().GetResult();
        buffer.Span[(int)(at - page)] ^= 0x10;
        device.WriteAsync(page, buffer.Memory).AsTask().GetAwaiter().GetResult();
    }
}
