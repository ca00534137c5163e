using Hci.Core.Blocks;
using Hci.Core.Buffers;
using Hci.Core.Replication;
using Hci.Testing;
using Hci.Testing.Replication;
using Microsoft.Extensions.Time.Testing;

namespace Hci.Core.Tests.Replication;

/// <summary>
/// Scrub on real replica stores of in-process nodes (memory devices, no network): bits flipped behind the stores' backs
/// and replicas written around the owner are found and repaired from the good majority, a block with no majority is
/// reported and left alone, client writes during a scrub lose nothing, and the configured rate holds.
/// </summary>
public sealed class ScrubTests
{
    private const int Block = ReplicaGeometry.BlockSize;
    private const long ExtentSize = 4L << 20;
    private const int BlocksPerExtent = (int)(ExtentSize / Block);
    private const ulong VolumeId = 7;
    private const long Fast = 1L << 40;

    [Fact]
    public async Task BitsFlippedInRandomBlocksOfRandomReplicasAreAllFoundAndRepairedAndTheReplicasAgreeAfterwards()
    {
        using var cluster = await InProcessReplicaCluster.StartAsync(3);
        var control = new MemoryVolumeControl(cluster.Placement(3));
        await using var volume = await Open(cluster, control);
        const int extents = 4;
        var data = Pattern((int)(extents * ExtentSize), 1);
        await volume.WriteAsync(0, data);

        // 60 random blocks, each damaged on one or two random replicas (never all three: a good copy is left).
        var random = new Random(1234);
        var damaged = new HashSet<(long Extent, int Block, string Node)>();
        foreach (int block in Enumerable.Range(0, extents * BlocksPerExtent).OrderBy(_ => random.Next()).Take(60))
        {
            var nodes = cluster.NodeIds.OrderBy(_ => random.Next()).Take(random.Next(1, 3));
            foreach (var node in nodes)
            {
                FlipBit(cluster, node, block / BlocksPerExtent, block % BlocksPerExtent, random.Next(Block));
                damaged.Add((block / BlocksPerExtent, block % BlocksPerExtent, node));
            }
        }

        var result = await volume.ScrubAsync();

        Assert.Equal(extents, result.ExtentsChecked);
        Assert.Equal(3 * extents * ExtentSize, result.BytesChecked);
        Assert.Equal(damaged.Count, result.BadBlocks);
        Assert.Equal(damaged.Count, result.RepairedBlocks);
        Assert.Equal(0, result.DivergingBlocks);
        Assert.Equal(0, result.UnrecoverableBlocks);
        Assert.Equal(0, result.RepairFailures);
        Assert.True(result.Repaired);
        var found = result.Findings.Select(f => (f.Extent, (int)(f.Offset / Block), f.NodeId)).ToHashSet();
        Assert.Equal(Math.Min(damaged.Count, ScrubResult.MaxFindings), found.Count);
        Assert.Subset(damaged, found);
        Assert.All(result.Findings, f => Assert.True(f.Kind == ScrubFindingKind.Bad && f.Repaired, f.ToString()));

        for (long e = 0; e < extents; e++)
        {
            AssertReplicasHold(cluster, e, data.AsSpan((int)(e * ExtentSize), (int)ExtentSize));
        }

        var again = await volume.ScrubAsync();
        Assert.True(again.Clean, $"{again.BadBlocks} bad, {again.DivergingBlocks} diverging after the repair");
    }

    [Fact]
    public async Task AReplicaHoldingOtherDataWithValidChecksumsIsRewrittenFromTheMajority()
    {
        using var cluster = await InProcessReplicaCluster.StartAsync(3);
        var control = new MemoryVolumeControl(cluster.Placement(3));
        await using var volume = await Open(cluster, control);
        var data = Pattern((int)ExtentSize, 2);
        await volume.WriteAsync(0, data);

        // node2 gets other data for three blocks straight through its store's API: self-consistent, but not the owner's.
        using (var probe = new ReplicaProbe(cluster.Connector, "node2"))
        {
            Assert.Equal(ReplicaStatus.Ok, probe.Write(VolumeId, 0, 5 * Block, Pattern(3 * Block, 99), epoch: 1));
        }

        var result = await volume.ScrubAsync();

        Assert.Equal(3, result.DivergingBlocks);
        Assert.Equal(0, result.BadBlocks);
        Assert.Equal(3, result.RepairedBlocks);
        Assert.Equal(0, result.UnrecoverableBlocks);
        Assert.All(result.Findings, f => Assert.True(f is { NodeId: "node2", Kind: ScrubFindingKind.Diverging, Repaired: true }, f.ToString()));
        Assert.Equal([5 * Block, 6 * Block, 7 * Block], result.Findings.Select(f => f.Offset).Order());
        AssertReplicasHold(cluster, 0, data);
    }

    [Fact]
    public async Task TwoReplicasThatDisagreeAreReportedUnrecoverableAndNeitherIsRewritten()
    {
        using var cluster = await InProcessReplicaCluster.StartAsync(2);
        var control = new MemoryVolumeControl(cluster.Placement(2));
        await using var volume = await Open(cluster, control, minInSync: 1);
        var data = Pattern((int)ExtentSize, 3);
        await volume.WriteAsync(0, data);
        var other = Pattern(Block, 77);
        using (var probe = new ReplicaProbe(cluster.Connector, "node2"))
        {
            Assert.Equal(ReplicaStatus.Ok, probe.Write(VolumeId, 0, 9 * Block, other, epoch: 1));
        }

        long writes1 = cluster.Connector.Delivered("node1", ReplicaOperation.Write);
        long writes2 = cluster.Connector.Delivered("node2", ReplicaOperation.Write);
        var result = await volume.ScrubAsync();

        Assert.Equal(1, result.UnrecoverableBlocks);
        Assert.Equal(0, result.RepairedBlocks);
        Assert.False(result.Repaired);
        Assert.Equal(2, result.Findings.Count);
        Assert.All(result.Findings, f => Assert.True(f is { Offset: 9 * Block, Kind: ScrubFindingKind.Unrecoverable, Repaired: false }, f.ToString()));
        Assert.Equal(writes1, cluster.Connector.Delivered("node1", ReplicaOperation.Write));
        Assert.Equal(writes2, cluster.Connector.Delivered("node2", ReplicaOperation.Write));
        using var probe1 = new ReplicaProbe(cluster.Connector, "node1");
        using var probe2 = new ReplicaProbe(cluster.Connector, "node2");
        Assert.Equal(data.AsSpan(9 * Block, Block).ToArray(), Read(probe1, 0, 9 * Block, Block));
        Assert.Equal(other, Read(probe2, 0, 9 * Block, Block));
    }

    [Fact]
    public async Task ABlockBadOnEveryReplicaIsReportedUnrecoverable()
    {
        using var cluster = await InProcessReplicaCluster.StartAsync(3);
        var control = new MemoryVolumeControl(cluster.Placement(3));
        await using var volume = await Open(cluster, control);
        await volume.WriteAsync(0, Pattern((int)ExtentSize, 4));
        foreach (var node in cluster.NodeIds)
        {
            FlipBit(cluster, node, 0, 12, 100);
        }

        var result = await volume.ScrubAsync();

        Assert.Equal(1, result.UnrecoverableBlocks);
        Assert.Equal(3, result.BadBlocks);
        Assert.Equal(0, result.RepairedBlocks);
        Assert.All(result.Findings, f => Assert.True(f is { Offset: 12 * Block, Kind: ScrubFindingKind.Unrecoverable, Repaired: false }, f.ToString()));
    }

    [Fact]
    public async Task ClientWritesDuringAScrubAreNeitherLostNorTakenForDivergence()
    {
        using var cluster = await InProcessReplicaCluster.StartAsync(3);
        var control = new MemoryVolumeControl(cluster.Placement(3));
        const int extents = 4;
        await using var volume = await Open(cluster, control, scrubRate: 24L << 20); // about 2 s for 48 MiB of copies
        var data = Pattern((int)(extents * ExtentSize), 5);
        await volume.WriteAsync(0, data);
        var random = new Random(5);
        var flipped = new HashSet<(long, int, string)>();
        for (int i = 0; i < 20; i++)
        {
            int block = random.Next(extents * BlocksPerExtent);
            string node = cluster.NodeIds[random.Next(3)];
            FlipBit(cluster, node, block / BlocksPerExtent, block % BlocksPerExtent, 7);
            flipped.Add((block / BlocksPerExtent, block % BlocksPerExtent, node));
        }

        var scrub = volume.ScrubAsync();
        long writes = 0;
        using (var buffer = new AlignedBuffer(4 * Block))
        {
            while (!scrub.IsCompleted || writes < 100)
            {
                // Runs of 1 to 4 blocks anywhere, each acknowledged before the next: the newest data is known.
                int blocks = random.Next(1, 5);
                int at = random.Next((extents * BlocksPerExtent) - blocks);
                random.NextBytes(buffer.Span[..(blocks * Block)]);
                await volume.WriteAsync((long)at * Block, buffer.Memory[..(blocks * Block)]);
                buffer.Span[..(blocks * Block)].CopyTo(data.AsSpan(at * Block));
                writes++;
            }
        }

        var result = await scrub;
        Assert.Equal(0, result.DivergingBlocks);
        Assert.Equal(0, result.UnrecoverableBlocks);
        Assert.True(result.BadBlocks <= flipped.Count, $"{result.BadBlocks} bad for {flipped.Count} flipped");
        Assert.Equal(result.BadBlocks, result.RepairedBlocks);

        var back = new byte[data.Length];
        await volume.ReadAsync(0, back);
        Assert.True(back.AsSpan().SequenceEqual(data), $"the volume lost an acknowledged write (first difference at byte {back.AsSpan().CommonPrefixLength(data)}; {writes} writes during the scrub)");

        // A flipped block the client did not overwrite is repaired; one it did is gone with the old data. Either way
        // every replica holds the newest data now.
        for (long e = 0; e < extents; e++)
        {
            AssertReplicasHold(cluster, e, data.AsSpan((int)(e * ExtentSize), (int)ExtentSize));
        }
    }

    [Fact]
    public async Task TheScrubReadsNoFasterThanItsConfiguredRate()
    {
        using var cluster = await InProcessReplicaCluster.StartAsync(3);
        var control = new MemoryVolumeControl(cluster.Placement(3));
        var clock = new PendingTimerTimeProvider();
        const long rate = 2L << 20;
        await using var volume = await Open(cluster, control, scrubRate: rate, time: clock);
        await volume.WriteAsync(0, Pattern((int)(2 * ExtentSize), 6));
        var progress = new LastProgress();

        var start = clock.GetUtcNow();
        var scrub = volume.ScrubAsync(progress);
        while (true)
        {
            await Deadline.WaitUntilAsync(() => scrub.IsCompleted || clock.Pending > 0, "the scrub to wait for its rate or finish");
            if (scrub.IsCompleted)
            {
                break;
            }

            double elapsed = (clock.GetUtcNow() - start).TotalSeconds;

            // At most one chunk (1 MiB) ahead of the rate at any time.
            Assert.True(progress.Last.BytesChecked <= (rate * elapsed) + ReplicaGeometry.MaxTransfer, $"{progress.Last.BytesChecked} bytes checked after {elapsed} s at {rate} bytes/s");
            clock.Advance(TimeSpan.FromMilliseconds(250));
        }

        var result = await scrub;
        double took = (clock.GetUtcNow() - start).TotalSeconds;
        Assert.Equal(3 * 2 * ExtentSize, result.BytesChecked);
        double expected = (double)(result.BytesChecked - ReplicaGeometry.MaxTransfer) / rate;
        Assert.True(took >= expected && took <= expected + 1, $"24 MiB at 2 MiB/s took {took} s of the clock (expected about {expected} s)");
        Assert.Equal(result.BytesChecked, progress.Last.BytesChecked);
        Assert.Equal(2, progress.Last.ExtentsChecked);
    }

    [Fact]
    public async Task TheBackgroundScrubRunsEveryScrubIntervalAndRepairsWhatItFinds()
    {
        using var cluster = await InProcessReplicaCluster.StartAsync(3);
        var control = new MemoryVolumeControl(cluster.Placement(3));
        var clock = new FakeTimeProvider();
        await using var volume = await Open(cluster, control, time: clock, scrubInterval: TimeSpan.FromHours(1));
        var data = Pattern((int)ExtentSize, 7);
        await volume.WriteAsync(0, data);
        FlipBit(cluster, "node3", 0, 40, 1);
        ReplicaStatus ReadNode3()
        {
            using var probe = new ReplicaProbe(cluster.Connector, "node3");
            return probe.Read(VolumeId, 0, 40 * Block, Block, epoch: 1).Status;
        }

        Assert.Equal(ReplicaStatus.ChecksumMismatch, ReadNode3());

        await Deadline.WaitUntilAsync(
            () =>
            {
                clock.Advance(TimeSpan.FromMinutes(10));
                return ReadNode3() == ReplicaStatus.Ok;
            },
            "the background scrub to repair node3's copy");
        AssertReplicasHold(cluster, 0, data);
    }

    [Theory]
    [InlineData(0L, 1.0)]
    [InlineData(4095L, 1.0)]
    [InlineData(Fast, 0.5)]
    [InlineData(Fast, 31.0 * 24 * 3600)]
    public async Task ScrubOptionsOutsideTheirRangesAreRefusedAtAttach(long rate, double intervalSeconds)
    {
        using var cluster = await InProcessReplicaCluster.StartAsync(3);
        var control = new MemoryVolumeControl(cluster.Placement(3));
        var e = await Assert.ThrowsAsync<ArgumentException>(() => Open(cluster, control, scrubRate: rate, scrubInterval: TimeSpan.FromSeconds(intervalSeconds)));
        Assert.Contains("Scrub", e.Message, StringComparison.Ordinal);
    }

    private static Task<ReplicatedVolume> Open(InProcessReplicaCluster cluster, MemoryVolumeControl control, int minInSync = 1, long scrubRate = Fast, TimeProvider? time = null, TimeSpan? scrubInterval = null)
        => ReplicatedVolume.OpenAsync(
            new ReplicatedVolumeSpec
            {
                Name = "vol",
                VolumeId = VolumeId,
                Size = 16 * ExtentSize,
                Epoch = 1,
                MinInSync = minInSync,
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
                ScrubBytesPerSecond = scrubRate,
                ScrubInterval = scrubInterval ?? TimeSpan.Zero,
                TimeProvider = time ?? TimeProvider.System,
            });

    // Every replica of the extent holds exactly the data, and their stored checksums are equal.
    private static void AssertReplicasHold(InProcessReplicaCluster cluster, long extent, ReadOnlySpan<byte> expected)
    {
        uint[]? first = null;
        foreach (var node in cluster.NodeIds)
        {
            using var probe = new ReplicaProbe(cluster.Connector, node);
            var sums = new uint[BlocksPerExtent];
            for (int chunk = 0; chunk < ExtentSize; chunk += ReplicaGeometry.MaxTransfer)
            {
                var (status, part) = probe.Read(VolumeId, extent, chunk, ReplicaGeometry.MaxTransfer, epoch: 1);
                Assert.True(status == ReplicaStatus.Ok, $"extent {extent} on {node} at {chunk}: {status}");
                int at = expected.Slice(chunk, part.Length).CommonPrefixLength(part);
                Assert.True(at == part.Length, $"extent {extent} on {node} differs from the newest data at byte {chunk + at}");
                var (sumStatus, partSums) = probe.Checksums(VolumeId, extent, chunk, ReplicaGeometry.MaxTransfer, epoch: 1);
                Assert.Equal(ReplicaStatus.Ok, sumStatus);
                partSums.CopyTo(sums, chunk / Block);
            }

            first ??= sums;
            Assert.Equal(first, sums);
        }
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

    // Damages one byte of a block of a replica on its device, behind the store's back (a rotting disk).
    private static void FlipBit(InProcessReplicaCluster cluster, string node, long extent, int block, int byteInBlock)
    {
        var store = cluster.Node(node).Stores[0];
        int slot = store.FindSlot(VolumeId, extent, out _);
        Assert.True(slot >= 0, $"{node} holds no extent {extent}");
        long page = store.SlotOffset(slot) + ((long)block * Block);
        BlockDevice device = cluster.Devices[node];
        using var buffer = new AlignedBuffer(Block);
        device.ReadAsync(page, buffer.Memory).AsTask().GetAwaiter().GetResult();
        buffer.Span[byteInBlock] ^= 0x10;
        device.WriteAsync(page, buffer.Memory).AsTask().GetAwaiter().GetResult();
    }

    private sealed class LastProgress : IProgress<ScrubProgress>
    {
        private ScrubProgress _last;

        public ScrubProgress Last
        {
            get
            {
                lock (this)
                {
                    return _last;
                }
            }
        }

        public void Report(ScrubProgress value)
        {
            lock (this)
            {
                _last = value;
            }
        }
    }
}
