using Hci.Core.Blocks;
using Hci.Core.Devices;
using Hci.Core.Devices.Decorators;
using Hci.Core.Replication;
using Hci.Core.Storage;

namespace Hci.Core.Tests.Storage;

public sealed unsafe class ReplicaStoreTests
{
    private const int Block = StoreHarness.Block;
    private const long Extent = 1 << 20;

    [Fact]
    public void AnUnwrittenExtentReadsAsZerosWithoutDeviceIo()
    {
        using var device = new CountingBlockDevice(new MemoryBlockDevice(64L << 20));
        using var store = StoreHarness.Format(device);
        using var h = new StoreHarness(store);
        long reads = device.Reads;
        long writes = device.Writes;
        var r = h.Prepare(ReplicaOperation.Read, 7, 3, 0, 256 * 1024);
        var checksums = stackalloc uint[64];
        r.Checksums = checksums;
        h.Buffer.Span.Fill(0xCC);
        Assert.Equal(ReplicaStatus.Ok, h.Run(r));
        Assert.False(r.Allocated);
        Assert.Equal(256 * 1024, r.Result);
        Assert.True(h.Buffer.Span[..(256 * 1024)].IndexOfAnyExcept((byte)0) < 0);
        Assert.Equal(Crc32C.ZeroBlock, checksums[63]);
        Assert.Equal(reads, device.Reads);
        Assert.Equal(writes + 1, device.Writes); // epoch 1 of a new volume: one volume-table page, no data I/O
        Assert.Equal(ReplicaStatus.Ok, h.Read(7, 3, 0, Block));
        Assert.Equal(reads, device.Reads);
        Assert.Equal(writes + 1, device.Writes);
    }

    [Fact]
    public void WrittenBlocksReadBackAndTheRestOfTheExtentReadsAsZeros()
    {
        using var device = new MemoryBlockDevice(64L << 20);
        using var store = StoreHarness.Format(device);
        using var h = new StoreHarness(store);
        // Fill the slot's data area with garbage first: a new extent must not show it.
        Assert.Equal(ReplicaStatus.Ok, h.Write(1, 0, 8 * Block, 2 * Block, writeId: 5));
        Assert.Equal(1, store.AllocatedExtents);
        Assert.Equal(ReplicaStatus.Ok, h.Read(1, 0, 6 * Block, 6 * Block));
        Assert.True(h.Request.Allocated);
        var span = h.Buffer.Span;
        Assert.Equal(-1, Pattern.IdOf(span[..Block], 1, 0, 6 * Block));
        Assert.Equal(-1, Pattern.IdOf(span[Block..(2 * Block)], 1, 0, 7 * Block));
        Assert.Equal(5, Pattern.IdOf(span[(2 * Block)..(3 * Block)], 1, 0, 8 * Block));
        Assert.Equal(5, Pattern.IdOf(span[(3 * Block)..(4 * Block)], 1, 0, 9 * Block));
        Assert.Equal(-1, Pattern.IdOf(span[(4 * Block)..(5 * Block)], 1, 0, 10 * Block));
        Assert.Equal(1, store.Stats.Reads);
        Assert.Equal(1, store.Stats.Writes);
    }

    [Fact]
    public void AFreedSlotReusedByAnotherExtentShowsNoneOfTheOldData()
    {
        using var device = new MemoryBlockDevice(8L << 20);
        using var store = StoreHarness.Format(device, maxVolumes: 4);
        using var h = new StoreHarness(store);
        long slots = store.SlotCount;
        for (long e = 0; e < slots; e++)
        {
            Assert.Equal(ReplicaStatus.Ok, h.Write(1, e, 0, 16 * Block, writeId: 1));
        }

        Assert.Equal(ReplicaStatus.Ok, h.Simple(ReplicaOperation.DropExtent, 1, extent: 0));
        Assert.Equal(ReplicaStatus.Ok, h.Write(2, 9, 4 * Block, Block, writeId: 2));
        Assert.Equal(ReplicaStatus.Ok, h.Read(2, 9, 0, 16 * Block));
        for (int b = 0; b < 16; b++)
        {
            Assert.Equal(b == 4 ? 2 : -1, Pattern.IdOf(h.Buffer.Span.Slice(b * Block, Block), 2, 9, (long)b * Block));
        }
    }

    [Fact]
    public void DataSurvivesAReopenAfterAFlushAndFuaWritesWithoutOne()
    {
        using var device = new MemoryBlockDevice(64L << 20);
        using (var store = StoreHarness.Format(device))
        using (var h = new StoreHarness(store))
        {
            Assert.Equal(ReplicaStatus.Ok, h.Write(3, 2, 0, 64 * Block, writeId: 11));
            Assert.Equal(ReplicaStatus.Ok, h.Simple(ReplicaOperation.Flush, 3));
            Assert.Equal(ReplicaStatus.Ok, h.Write(3, 5, Extent - Block, Block, writeId: 12, flags: BlockRequestFlags.ForceUnitAccess));
        }

        using (var store = StoreHarness.Open(device))
        using (var h = new StoreHarness(store))
        {
            Assert.Equal(2, store.AllocatedExtents);
            Assert.Equal(ReplicaStatus.Ok, h.Read(3, 2, 0, 64 * Block));
            for (int b = 0; b < 64; b++)
            {
                Assert.Equal(11, Pattern.IdOf(h.Buffer.Span.Slice(b * Block, Block), 3, 2, (long)b * Block));
            }

            Assert.Equal(ReplicaStatus.Ok, h.Read(3, 5, Extent - Block, Block));
            Assert.Equal(12, Pattern.IdOf(h.Buffer.Span[..Block], 3, 5, Extent - Block));
            Assert.Equal(0, store.Stats.TornBlocksReconciled);
        }
    }

    [Fact]
    public void ABitFlippedInTheDataAreaIsNeverServedAndIsCounted()
    {
        using var device = new MemoryBlockDevice(64L << 20);
        long slotOffset;
        using (var store = StoreHarness.Format(device))
        using (var h = new StoreHarness(store))
        {
            Assert.Equal(ReplicaStatus.Ok, h.Write(4, 1, 0, 4 * Block, writeId: 3));
            Assert.Equal(ReplicaStatus.Ok, h.Simple(ReplicaOperation.MarkClean, 4, extent: 1, argument: ulong.MaxValue));
            int slot = store.FindSlot(4, 1, out _);
            slotOffset = store.SlotOffset(slot);
        }

        FlipBit(device, slotOffset + (2 * Block) + 100);
        using (var store = StoreHarness.Open(device))
        using (var h = new StoreHarness(store))
        {
            Assert.Equal(0, store.Stats.TornBlocksReconciled); // outside the activity log: corruption, left alone
            Assert.Equal(ReplicaStatus.ChecksumMismatch, h.Read(4, 1, 0, 4 * Block));
            Assert.True(h.Buffer.Span[..(4 * Block)].IndexOfAnyExcept((byte)0) < 0, "nothing of a failed read is served");
            Assert.Equal(1, store.Stats.ChecksumMismatches);
            Assert.Equal(ReplicaStatus.Ok, h.Read(4, 1, 0, 2 * Block)); // the good blocks still read
            Assert.Equal(ReplicaStatus.Ok, h.Write(4, 1, 2 * Block, Block, writeId: 4)); // repair
            Assert.Equal(ReplicaStatus.Ok, h.Read(4, 1, 0, 4 * Block));
            Assert.Equal(4, Pattern.IdOf(h.Buffer.Span.Slice(2 * Block, Block), 4, 1, 2 * Block));
        }
    }

    [Fact]
    public void AnOverwriteIsOneDeviceWriteAndItsChecksumPageWaitsForWriteBack()
    {
        var device = new CountingBlockDevice(new MemoryBlockDevice(64L << 20));
        using (device)
        using (var store = StoreHarness.Format(device))
        using (var h = new StoreHarness(store))
        {
            Assert.Equal(ReplicaStatus.Ok, h.Write(3, 1, 0, Block, writeId: 1));
            long before = device.Writes;
            Assert.Equal(ReplicaStatus.Ok, h.Write(3, 1, 0, Block, writeId: 2));
            Assert.Equal(1, device.Writes - before); // the data only
            Assert.Equal(1, store.DeferredPages(out _));
            Assert.Equal(ReplicaStatus.Ok, h.Read(3, 1, 0, Block)); // served with the checksum in memory
            Assert.Equal(2, Pattern.IdOf(h.Buffer.Span[..Block], 3, 1, 0));
        }
    }

    [Fact]
    public void AfterACrashAnOverwriteWhosePageWasNotWrittenBackReadsBackAndIsNotCorruption()
    {
        var device = new PowerLossBlockDevice(new MemoryBlockDevice(64L << 20));
        using (var store = StoreHarness.Format(device))
        using (var h = new StoreHarness(store))
        {
            Assert.Equal(ReplicaStatus.Ok, h.Write(3, 1, 0, 2 * Block, writeId: 1));
            Assert.Equal(ReplicaStatus.Ok, h.Simple(ReplicaOperation.Flush, 3));
            Assert.Equal(ReplicaStatus.Ok, h.Write(3, 1, Block, Block, writeId: 2, flags: BlockRequestFlags.ForceUnitAccess));
            Assert.Equal(1, store.DeferredPages(out _));
            device.CutPower();
        }

        Crash(device);
        using (device)
        using (var store = StoreHarness.Open(device))
        using (var h = new StoreHarness(store))
        {
            Assert.Equal(1, store.Stats.TornBlocksReconciled); // the overwrite's checksum, recomputed from its data
            Assert.Equal(ReplicaStatus.Ok, h.Read(3, 1, 0, 2 * Block));
            Assert.Equal(1, Pattern.IdOf(h.Buffer.Span[..Block], 3, 1, 0));
            Assert.Equal(2, Pattern.IdOf(h.Buffer.Span.Slice(Block, Block), 3, 1, Block));
            Assert.Equal(0, store.Stats.ChecksumMismatches);
        }
    }

    [Fact]
    public void AMarkCleanMakesTheDeferredChecksumPageAndTheDataDurableBeforeTheRegionLeavesTheLog()
    {
        var device = new PowerLossBlockDevice(new MemoryBlockDevice(64L << 20));
        using (var store = StoreHarness.Format(device))
        using (var h = new StoreHarness(store))
        {
            Assert.Equal(ReplicaStatus.Ok, h.Write(3, 1, 0, Block, writeId: 1));
            Assert.Equal(ReplicaStatus.Ok, h.Write(3, 1, 0, Block, writeId: 2));
            Assert.Equal(ReplicaStatus.Ok, h.Simple(ReplicaOperation.MarkClean, 3, extent: 1, argument: ulong.MaxValue));
            device.CutPower();
        }

        Crash(device); // every write not flushed is lost
        using (device)
        using (var store = StoreHarness.Open(device))
        using (var h = new StoreHarness(store))
        {
            Assert.Equal(0, store.Stats.TornBlocksReconciled); // nothing left in the log to recompute
            Assert.Equal(ReplicaStatus.Ok, h.Read(3, 1, 0, Block));
            Assert.Equal(2, Pattern.IdOf(h.Buffer.Span[..Block], 3, 1, 0));
            Assert.Equal(0, store.Stats.ChecksumMismatches);
        }
    }

    [Fact]
    public void DeferredChecksumPagesAreWrittenBackInBatches()
    {
        using var device = new MemoryBlockDevice(320L << 20); // zeroed lazily: only what is written takes memory
        using var store = StoreHarness.Format(device, extentSize: 4L << 20); // one checksum page per extent
        using var h = new StoreHarness(store);
        for (int e = 0; e < 70; e++)
        {
            Assert.Equal(ReplicaStatus.Ok, h.Write(5, e, 0, Block, writeId: 1));
        }

        for (int e = 0; e < 63; e++)
        {
            Assert.Equal(ReplicaStatus.Ok, h.Write(5, e, 0, Block, writeId: 2));
        }

        Assert.Equal(63, store.DeferredPages(out _));
        Assert.Equal(ReplicaStatus.Ok, h.Write(5, 63, 0, Block, writeId: 2)); // the 64th: the batch goes out
        Assert.Equal(0, store.DeferredPages(out _));
        Assert.Equal(ReplicaStatus.Ok, h.Write(5, 64, 0, Block, writeId: 2));
        Assert.Equal(1, store.DeferredPages(out _));
    }

    [Fact]
    public void ABlockTornInsideTheActivityLogIsReconciledOnOpenNotReportedAsCorruption()
    {
        using var device = new MemoryBlockDevice(64L << 20);
        long slotOffset;
        using (var store = StoreHarness.Format(device))
        using (var h = new StoreHarness(store))
        {
            Assert.Equal(ReplicaStatus.Ok, h.Write(4, 1, 0, 4 * Block, writeId: 3, flags: BlockRequestFlags.ForceUnitAccess));
            slotOffset = store.SlotOffset(store.FindSlot(4, 1, out _));
        }

        // An unacknowledged write reached the data but not the checksum page.
        FlipBit(device, slotOffset + Block + 7);
        using (var store = StoreHarness.Open(device))
        using (var h = new StoreHarness(store))
        {
            Assert.Equal(1, store.Stats.TornBlocksReconciled);
            Assert.Equal(ReplicaStatus.Ok, h.Read(4, 1, 0, 4 * Block));
            Assert.Equal(0, store.Stats.ChecksumMismatches);
            var r = h.Prepare(ReplicaOperation.GetDirtyRegions, 4, 0, 0, 16);
            Assert.Equal(ReplicaStatus.Ok, h.Run(r));
            Assert.Equal(1, r.Result);
            Assert.Equal(1L, BitConverter.ToInt64(h.Buffer.Span));
            Assert.Equal(1UL, BitConverter.ToUInt64(h.Buffer.Span[8..])); // region 0 stays dirty for the owner's reconciliation
        }
    }

    [Fact]
    public void AnOlderEpochIsRefusedWithTheNewestAndTheFenceSurvivesAReopen()
    {
        using var device = new MemoryBlockDevice(64L << 20);
        using (var store = StoreHarness.Format(device))
        using (var h = new StoreHarness(store))
        {
            Assert.Equal(ReplicaStatus.Ok, h.Write(9, 0, 0, Block, writeId: 1, epoch: 3));
            Assert.Equal(ReplicaStatus.Ok, h.Simple(ReplicaOperation.Fence, 9, epoch: 5));
            Assert.Equal(ReplicaStatus.StaleEpoch, h.Write(9, 0, 0, Block, writeId: 2, epoch: 4));
            Assert.Equal(5UL, h.Request.ObservedEpoch);
            Assert.Equal(ReplicaStatus.StaleEpoch, h.Read(9, 0, 0, Block, epoch: 3));
            Assert.Equal(ReplicaStatus.StaleEpoch, h.Simple(ReplicaOperation.Fence, 9, epoch: 4));
            Assert.Equal(ReplicaStatus.Ok, h.Read(9, 0, 0, Block, epoch: 5));
            Assert.Equal(1, Pattern.IdOf(h.Buffer.Span[..Block], 9, 0, 0)); // the refused write changed nothing
            Assert.Equal(ReplicaStatus.Ok, h.Read(10, 0, 0, Block, epoch: 0)); // other volumes are not fenced
            Assert.Equal(3, store.Stats.StaleEpochRefusals);
        }

        using (var store = StoreHarness.Open(device))
        using (var h = new StoreHarness(store))
        {
            Assert.Equal(5UL, store.GetEpoch(9));
            Assert.Equal(ReplicaStatus.StaleEpoch, h.Write(9, 0, 0, Block, writeId: 2, epoch: 4));
            Assert.Equal(5UL, h.Request.ObservedEpoch);
            Assert.Equal(ReplicaStatus.Ok, h.Write(9, 0, 0, Block, writeId: 2, epoch: 6));
        }

        using (var store = StoreHarness.Open(device))
        {
            Assert.Equal(6UL, store.GetEpoch(9));
        }
    }

    [Theory]
    [InlineData(0L, 0, ReplicaStatus.Invalid)]
    [InlineData(0L, 1, ReplicaStatus.Invalid)]
    [InlineData(1L, Block, ReplicaStatus.Invalid)]
    [InlineData(0L, Block, ReplicaStatus.Ok)]
    [InlineData(0L, ReplicaGeometry.MaxTransfer, ReplicaStatus.Ok)]
    [InlineData(0L, ReplicaGeometry.MaxTransfer + Block, ReplicaStatus.Invalid)]
    [InlineData(0L, ReplicaGeometry.MaxTransfer - 1, ReplicaStatus.Invalid)]
    [InlineData(Extent - Block, Block, ReplicaStatus.Ok)]
    [InlineData(Extent - Block, 2 * Block, ReplicaStatus.Invalid)]
    [InlineData(Extent, Block, ReplicaStatus.Invalid)]
    [InlineData(Extent - 1, Block, ReplicaStatus.Invalid)]
    [InlineData(Extent + 1, Block, ReplicaStatus.Invalid)]
    [InlineData(1L << 31, Block, ReplicaStatus.Invalid)]
    [InlineData(1L << 32, Block, ReplicaStatus.Invalid)]
    [InlineData(long.MaxValue - Block + 1, Block, ReplicaStatus.Invalid)]
    [InlineData(-Block, Block, ReplicaStatus.Invalid)]
    [InlineData(long.MinValue, Block, ReplicaStatus.Invalid)]
    public void RangesAreCheckedWithSixtyFourBitArithmetic(long offset, int length, ReplicaStatus expected)
    {
        using var device = new MemoryBlockDevice(64L << 20);
        using var store = StoreHarness.Format(device);
        using var h = new StoreHarness(store);
        foreach (var op in new[] { ReplicaOperation.Write, ReplicaOperation.Read })
        {
            var r = h.Prepare(op, 1, 0, offset, length, segment: length > 0 && length % Block == 0);
            if (length > 0 && length % Block != 0)
            {
                r.AddSegment(h.Buffer.Pointer, length);
            }

            Assert.Equal(expected, h.Run(r));
        }
    }

    [Theory]
    [InlineData(-1L, ReplicaStatus.Invalid)]
    [InlineData(long.MinValue, ReplicaStatus.Invalid)]
    [InlineData(long.MaxValue, ReplicaStatus.Invalid)]
    [InlineData(long.MaxValue / Extent, ReplicaStatus.Invalid)]
    [InlineData((long.MaxValue / Extent) - 1, ReplicaStatus.Ok)]
    [InlineData(1L << 31, ReplicaStatus.Ok)]
    [InlineData(1L << 32, ReplicaStatus.Ok)]
    public void ExtentIndicesAreCheckedSoThatTheirBytesFitInSixtyFourBits(long extent, ReplicaStatus expected)
    {
        using var device = new MemoryBlockDevice(64L << 20);
        using var store = StoreHarness.Format(device);
        using var h = new StoreHarness(store);
        Assert.Equal(expected, h.Write(1, extent, 0, Block, writeId: 1));
        if (expected == ReplicaStatus.Ok)
        {
            Assert.Equal(ReplicaStatus.Ok, h.Read(1, extent, 0, Block));
            Assert.Equal(1, Pattern.IdOf(h.Buffer.Span[..Block], 1, extent, 0));
        }
    }

    [Fact]
    public void MalformedRequestsAreRefusedAsInvalid()
    {
        using var device = new MemoryBlockDevice(64L << 20);
        using var store = StoreHarness.Format(device);
        using var h = new StoreHarness(store);
        var r = h.Prepare(ReplicaOperation.Write, 1, 0, 0, Block);
        r.Length = 2 * Block; // segments do not add up
        Assert.Equal(ReplicaStatus.Invalid, h.Run(r));
        r = h.Prepare((ReplicaOperation)0, 1, 0);
        Assert.Equal(ReplicaStatus.Invalid, h.Run(r));
        r = h.Prepare((ReplicaOperation)11, 1, 0);
        Assert.Equal(ReplicaStatus.Invalid, h.Run(r));
        r = h.Prepare(ReplicaOperation.Write, 1, 0);
        r.Flags = (BlockRequestFlags)0x80;
        Assert.Equal(ReplicaStatus.Invalid, h.Run(r));
        r = h.Prepare(ReplicaOperation.Write, 1, 0);
        r.Class = (IoClass)9;
        Assert.Equal(ReplicaStatus.Invalid, h.Run(r));
        r = h.Prepare(ReplicaOperation.ReadChecksums, 1, 0, 0, Block, segment: false); // no checksum buffer
        Assert.Equal(ReplicaStatus.Invalid, h.Run(r));
        r = h.Prepare(ReplicaOperation.Read, 1, 0, 0, Block, segment: false); // no segments
        Assert.Equal(ReplicaStatus.Invalid, h.Run(r));
        Assert.Equal(7, store.Stats.InvalidRequests);
        Assert.Equal(0, store.AllocatedExtents);
    }

    [Fact]
    public void AWriteWhoseChecksumsDoNotMatchItsDataIsRefusedAsABadPayload()
    {
        using var device = new MemoryBlockDevice(64L << 20);
        using var store = StoreHarness.Format(device);
        using var h = new StoreHarness(store);
        var checksums = stackalloc uint[2];
        var r = h.Prepare(ReplicaOperation.Write, 1, 0, 0, 2 * Block);
        Pattern.Fill(h.Buffer.Span[..(2 * Block)], 1, 0, 0, 1);
        checksums[0] = Crc32C.Compute(h.Buffer.Span[..Block]);
        checksums[1] = Crc32C.Compute(h.Buffer.Span[Block..(2 * Block)]) ^ 1;
        r.Checksums = checksums;
        Assert.Equal(ReplicaStatus.BadPayload, h.Run(r));
        Assert.Equal(0, store.AllocatedExtents);
        checksums[1] ^= 1;
        r = h.Prepare(ReplicaOperation.Write, 1, 0, 0, 2 * Block);
        r.Checksums = checksums;
        Assert.Equal(ReplicaStatus.Ok, h.Run(r));

        var read = stackalloc uint[2];
        r = h.Prepare(ReplicaOperation.ReadChecksums, 1, 0, 0, 2 * Block, segment: false);
        r.Checksums = read;
        Assert.Equal(ReplicaStatus.Ok, h.Run(r));
        Assert.True(r.Allocated);
        Assert.Equal(checksums[0], read[0]);
        Assert.Equal(checksums[1], read[1]);
    }

    [Fact]
    public void AFullStoreAnswersNoSpaceAndTakesWritesAgainOnceAnExtentIsDropped()
    {
        using var device = new MemoryBlockDevice(8L << 20);
        using var store = StoreHarness.Format(device, maxVolumes: 4);
        using var h = new StoreHarness(store);
        long slots = store.SlotCount;
        Assert.True(slots >= 4, $"{slots} slots");
        for (long e = 0; e < slots; e++)
        {
            Assert.Equal(ReplicaStatus.Ok, h.Write(1, e, 0, Block, writeId: e));
        }

        Assert.Equal(0, store.FreeSlots);
        Assert.Equal(ReplicaStatus.NoSpace, h.Write(1, slots, 0, Block, writeId: 99));
        Assert.Equal(ReplicaStatus.Ok, h.Write(1, 0, Block, Block, writeId: 98)); // allocated extents still take writes
        Assert.Equal(ReplicaStatus.Ok, h.Simple(ReplicaOperation.DropExtent, 1, extent: 1));
        Assert.Equal(ReplicaStatus.Ok, h.Write(1, slots, 0, Block, writeId: 99));
        Assert.Equal(ReplicaStatus.Ok, h.Read(1, 1, 0, Block));
        Assert.False(h.Request.Allocated);
    }

    [Fact]
    public void ListingTheExtentsOfAVolumeTheStoreNeverSawTakesNoEntryOfItsVolumeTable()
    {
        using var device = new MemoryBlockDevice(8L << 20);
        using var store = StoreHarness.Format(device, maxVolumes: 2);
        using var h = new StoreHarness(store);
        Assert.Equal(ReplicaStatus.Ok, h.Simple(ReplicaOperation.Fence, 1, epoch: 1));
        foreach (ulong unknown in new ulong[] { 3, 4, 5 })
        {
            var r = h.Prepare(ReplicaOperation.ListExtents, unknown, 0, 0, 64, epoch: 7);
            Assert.Equal(ReplicaStatus.Ok, h.Run(r));
            Assert.Equal(0, r.Result);
            Assert.Equal(0UL, store.GetEpoch(unknown));
        }

        // The second entry is still free, and the list fenced nothing: an older epoch is taken.
        Assert.Equal(ReplicaStatus.Ok, h.Simple(ReplicaOperation.Fence, 3, epoch: 2));
        Assert.Equal(2UL, store.GetEpoch(3));
    }

    [Fact]
    public void AFullVolumeTableAnswersNoSpace()
    {
        using var device = new MemoryBlockDevice(8L << 20);
        using var store = StoreHarness.Format(device, maxVolumes: 2);
        using var h = new StoreHarness(store);
        Assert.Equal(ReplicaStatus.Ok, h.Simple(ReplicaOperation.Fence, 1, epoch: 1));
        Assert.Equal(ReplicaStatus.Ok, h.Simple(ReplicaOperation.Fence, 2, epoch: 1));
        Assert.Equal(ReplicaStatus.NoSpace, h.Simple(ReplicaOperation.Fence, 3, epoch: 1));
        Assert.Equal(ReplicaStatus.Ok, h.Simple(ReplicaOperation.DropVolume, 2, epoch: 1));
        Assert.Equal(ReplicaStatus.Ok, h.Simple(ReplicaOperation.Fence, 3, epoch: 1));
    }

    [Fact]
    public void ListsDirtyRegionsMarkCleanAndDropsWorkAndPersist()
    {
        using var device = new MemoryBlockDevice(64L << 20);
        using (var store = StoreHarness.Format(device))
        using (var h = new StoreHarness(store))
        {
            long region = Extent / 64;
            Assert.Equal(ReplicaStatus.Ok, h.Write(5, 0, 0, Block, writeId: 1));
            Assert.Equal(ReplicaStatus.Ok, h.Write(5, 3, region * 2, (int)region + Block, writeId: 1)); // regions 2, 3
            Assert.Equal(ReplicaStatus.Ok, h.Write(5, 7, Extent - Block, Block, writeId: 1)); // region 63
            Assert.Equal(ReplicaStatus.Ok, h.Write(6, 0, 0, Block, writeId: 1));

            var r = h.Prepare(ReplicaOperation.ListExtents, 5, 0, 0, 16); // room for two of three
            Assert.Equal(ReplicaStatus.Ok, h.Run(r));
            Assert.Equal(3, r.Result);
            r = h.Prepare(ReplicaOperation.ListExtents, 5, 0, 0, 24);
            Assert.Equal(ReplicaStatus.Ok, h.Run(r));
            Assert.Equal(new long[] { 0, 3, 7 }, Longs(h, 3).Order().ToArray());

            Assert.Equal(ReplicaStatus.Ok, h.Simple(ReplicaOperation.MarkClean, 5, extent: 3, argument: 1UL << 2));
            Assert.Equal(ReplicaStatus.Ok, h.Simple(ReplicaOperation.MarkClean, 5, extent: 0, argument: ulong.MaxValue));
            Assert.Equal(ReplicaStatus.Ok, h.Simple(ReplicaOperation.MarkClean, 5, extent: 40, argument: ulong.MaxValue)); // unallocated: nothing to do
            r = h.Prepare(ReplicaOperation.GetDirtyRegions, 5, 0, 0, 64);
            Assert.Equal(ReplicaStatus.Ok, h.Run(r));
            Assert.Equal(2, r.Result);
            var pairs = Longs(h, 4);
            var dirty = new Dictionary<long, ulong> { [pairs[0]] = (ulong)pairs[1], [pairs[2]] = (ulong)pairs[3] };
            Assert.Equal(1UL << 3, dirty[3]);
            Assert.Equal(1UL << 63, dirty[7]);

            Assert.Equal(ReplicaStatus.Ok, h.Simple(ReplicaOperation.DropExtent, 5, extent: 7));
            Assert.Equal(ReplicaStatus.Ok, h.Simple(ReplicaOperation.DropExtent, 5, extent: 8)); // not held: fine
        }

        using (var store = StoreHarness.Open(device))
        using (var h = new StoreHarness(store))
        {
            Assert.Equal(3, store.AllocatedExtents);
            var r = h.Prepare(ReplicaOperation.GetDirtyRegions, 5, 0, 0, 64);
            Assert.Equal(ReplicaStatus.Ok, h.Run(r));
            Assert.Equal(1, r.Result);
            Assert.Equal(3L, Longs(h, 2)[0]);
            Assert.Equal(1L << 3, Longs(h, 2)[1]);
            Assert.Equal(ReplicaStatus.Ok, h.Read(5, 3, (Extent / 64) * 2, Block));
            Assert.Equal(1, Pattern.IdOf(h.Buffer.Span[..Block], 5, 3, (Extent / 64) * 2));

            Assert.Equal(ReplicaStatus.Ok, h.Simple(ReplicaOperation.DropVolume, 5));
            Assert.Equal(1, store.AllocatedExtents);
            Assert.Equal(0UL, store.GetEpoch(5));
            r = h.Prepare(ReplicaOperation.ListExtents, 5, 0, 0, 64, epoch: 0); // the store no longer knows the volume
            Assert.Equal(ReplicaStatus.Ok, h.Run(r));
            Assert.Equal(0, r.Result);
        }

        using (var store = StoreHarness.Open(device))
        {
            Assert.Equal(1, store.AllocatedExtents);
            Assert.Equal(1UL, store.GetEpoch(6));
            Assert.Equal(0UL, store.GetEpoch(5));
        }
    }

    [Fact]
    public void FormatAndOpenRefuseWhatTheyCannotUseWithMessagesThatSayWhy()
    {
        Assert.Contains("power of two", Assert.Throws<ArgumentException>(() => new ReplicaStoreOptions { ExtentSize = 3 << 20 }.Validate()).Message);
        Assert.Contains("MaxVolumes", Assert.Throws<ArgumentException>(() => new ReplicaStoreOptions { MaxVolumes = 0 }.Validate()).Message);
        Assert.Contains("StoreId", Assert.Throws<ArgumentException>(() => new ReplicaStoreOptions { StoreId = Guid.Empty }.Validate()).Message);
        using var tiny = new MemoryBlockDevice(1L << 20);
        Assert.Contains("too small", Assert.Throws<ArgumentException>(() => StoreHarness.Format(tiny)).Message);
        using var blank = new MemoryBlockDevice(8L << 20);
        Assert.Contains("format it first", Assert.Throws<InvalidDataException>(() => StoreHarness.Open(blank)).Message);
        using var small = new MemoryBlockDevice(8L << 20, maxTransferBytes: 64 * 1024);
        Assert.Contains("MaxTransferBytes", Assert.Throws<ArgumentException>(() => StoreHarness.Format(small)).Message);
    }

    [Fact]
    public void AStoreWithADamagedSuperblockDoesNotOpen()
    {
        using var device = new MemoryBlockDevice(8L << 20);
        StoreHarness.Format(device).Dispose();
        FlipBit(device, 40);
        Assert.Contains("checksum", Assert.Throws<InvalidDataException>(() => StoreHarness.Open(device)).Message);
    }

    // Loses every write no flush or force unit access made durable (the queues are closed: nothing is in flight).
    private static void Crash(PowerLossBlockDevice device) => device.SimulateCrashAsync().GetAwaiter().GetResult();

    internal static void FlipBit(BlockDevice device, long at)
    {
        using var buffer = new Hci.Core.Buffers.AlignedBuffer(Block);
        long page = at / Block * Block;
        device.ReadAsync(page, buffer.Memory).AsTask().GetAwaiter().GetResult();
        buffer.Span[(int)(at - page)] ^= 0x10;
        device.WriteAsync(page, buffer.Memory).AsTask().GetAwaiter().GetResult();
    }

    private static long[] Longs(StoreHarness h, int count)
    {
        var result = new long[count];
        for (int i = 0; i < count; i++)
        {
            result[i] = BitConverter.ToInt64(h.Buffer.Span[(i * 8)..]);
        }

        return result;
    }
}
