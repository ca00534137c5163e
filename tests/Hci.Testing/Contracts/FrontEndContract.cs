using Hci.Core.Blocks;
using Hci.Core.Devices;
using Xunit;

namespace Hci.Testing;

/// <summary>
/// What a guest can see of any front-end, written once: what it writes it reads back, flush succeeds, discard and
/// write-zeroes do what they say where offered, I/O past the last block is refused and changes nothing, the last
/// block is as good as the first, a read-only export refuses writes and keeps its data, and a transfer at the
/// announced maximum moves every byte.
/// </summary>
/// <remarks>
/// Each front-end is a small subclass that exports a device through its real protocol and returns the guest's view
/// of it (<see cref="GuestDisk"/>): the vhost-user client against the vhost-user-blk back-end, a raw iSCSI initiator
/// against the iSCSI target. Real parts on both sides, no mocks; the test looks behind the front-end at the device
/// it exported to see that the guest's requests reached it.
/// </remarks>
public abstract class FrontEndContract
{
    /// <summary>The size of the disk every test exports.</summary>
    public const long DiskSize = 16L << 20;

    /// <summary>Exports <paramref name="device"/> through the front-end and returns the guest's view of it.</summary>
    /// <param name="device">The device; the test disposes it after the guest disk.</param>
    /// <returns>The guest's disk.</returns>
    protected abstract Task<GuestDisk> ExportAsync(BlockDevice device);

    [Fact]
    public async Task WhatTheGuestWritesItReadsBackAndTheDeviceHolds()
    {
        using var device = new MemoryBlockDevice(DiskSize);
        await using var disk = await ExportAsync(device);
        Assert.Equal(DiskSize, disk.BlockCount * disk.BlockSize);
        Assert.False(disk.ReadOnly);
        foreach (long lba in new[] { 0, 1, disk.BlockCount / 2, disk.BlockCount - 8 })
        {
            var data = Pattern(disk, 8, seed: (int)lba);
            Assert.Equal(GuestStatus.Good, await disk.WriteAsync(lba, data));
            var back = new byte[data.Length];
            Assert.Equal(GuestStatus.Good, await disk.ReadAsync(lba, back));
            Assert.True(back.AsSpan().SequenceEqual(data), $"8 blocks at {lba} read back differ");
            Assert.True((await Behind(device, lba * disk.BlockSize, data.Length)).AsSpan().SequenceEqual(data), $"the device does not hold the 8 blocks written at {lba}");
        }
    }

    [Fact]
    public async Task FlushSucceedsAndWhatWasWrittenStays()
    {
        using var device = new MemoryBlockDevice(DiskSize);
        await using var disk = await ExportAsync(device);
        var data = Pattern(disk, 4, seed: 3);
        Assert.Equal(GuestStatus.Good, await disk.WriteAsync(16, data));
        Assert.Equal(GuestStatus.Good, await disk.FlushAsync());
        var back = new byte[data.Length];
        Assert.Equal(GuestStatus.Good, await disk.ReadAsync(16, back));
        Assert.True(back.AsSpan().SequenceEqual(data));
    }

    [Fact]
    public async Task DiscardedBlocksReadAsZeroesAndTheirNeighboursKeepTheirData()
    {
        using var device = new MemoryBlockDevice(DiskSize);
        await using var disk = await ExportAsync(device);
        Assert.True(disk.OffersDiscard, "a memory device can discard, and the front-end should offer it");
        var data = Pattern(disk, 6, seed: 5);
        Assert.Equal(GuestStatus.Good, await disk.WriteAsync(32, data));
        Assert.Equal(GuestStatus.Good, await disk.DiscardAsync(33, 4));
        var back = new byte[data.Length];
        Assert.Equal(GuestStatus.Good, await disk.ReadAsync(32, back));
        int bs = disk.BlockSize;
        Assert.True(back.AsSpan(0, bs).SequenceEqual(data.AsSpan(0, bs)), "the block before the discarded range changed");
        Assert.True(back.AsSpan(5 * bs).SequenceEqual(data.AsSpan(5 * bs)), "the block after the discarded range changed");

        // The memory device promises that discarded blocks read zeroes; the discard reached it.
        Assert.True(back.AsSpan(bs, 4 * bs).IndexOfAnyExcept((byte)0) < 0, "discarded blocks do not read zeroes");
    }

    [Fact]
    public async Task WriteZeroesZeroesExactlyTheRange()
    {
        using var device = new MemoryBlockDevice(DiskSize);
        await using var disk = await ExportAsync(device);
        Assert.True(disk.OffersWriteZeroes, "a memory device can write zeroes, and the front-end should offer it");
        var data = Pattern(disk, 6, seed: 7);
        Assert.Equal(GuestStatus.Good, await disk.WriteAsync(64, data));
        Assert.Equal(GuestStatus.Good, await disk.WriteZeroesAsync(65, 4));
        var back = new byte[data.Length];
        Assert.Equal(GuestStatus.Good, await disk.ReadAsync(64, back));
        int bs = disk.BlockSize;
        Assert.True(back.AsSpan(0, bs).SequenceEqual(data.AsSpan(0, bs)), "the block before the zeroed range changed");
        Assert.True(back.AsSpan(bs, 4 * bs).IndexOfAnyExcept((byte)0) < 0, "the zeroed blocks are not zero");
        Assert.True(back.AsSpan(5 * bs).SequenceEqual(data.AsSpan(5 * bs)), "the block after the zeroed range changed");
    }

    [Fact]
    public async Task TheLastBlockReadsAndWritesLikeAnyOther()
    {
        using var device = new MemoryBlockDevice(DiskSize);
        await using var disk = await ExportAsync(device);
        long last = disk.BlockCount - 1;
        var data = Pattern(disk, 1, seed: 11);
        Assert.Equal(GuestStatus.Good, await disk.WriteAsync(last, data));
        var back = new byte[data.Length];
        Assert.Equal(GuestStatus.Good, await disk.ReadAsync(last, back));
        Assert.True(back.AsSpan().SequenceEqual(data));
        Assert.True((await Behind(device, last * disk.BlockSize, data.Length)).AsSpan().SequenceEqual(data), "the last block did not reach the device");
    }

    [Fact]
    public async Task IoPastTheLastBlockIsRefusedAndChangesNothing()
    {
        using var device = new MemoryBlockDevice(DiskSize);
        await using var disk = await ExportAsync(device);
        long count = disk.BlockCount;
        var before = Pattern(disk, 1, seed: 13);
        Assert.Equal(GuestStatus.Good, await disk.WriteAsync(count - 1, before));

        var one = Pattern(disk, 1, seed: 17);
        var two = Pattern(disk, 2, seed: 19);
        AssertRefused(disk, GuestStatus.OutOfRange, await disk.ReadAsync(count, new byte[one.Length]), "a read of the block after the last");
        AssertRefused(disk, GuestStatus.OutOfRange, await disk.WriteAsync(count, one), "a write of the block after the last");
        AssertRefused(disk, GuestStatus.OutOfRange, await disk.WriteAsync(count - 1, two), "a write straddling the end");
        AssertRefused(disk, GuestStatus.OutOfRange, await disk.ReadAsync(count - 1, new byte[two.Length]), "a read straddling the end");
        if (disk.OffersWriteZeroes)
        {
            AssertRefused(disk, GuestStatus.OutOfRange, await disk.WriteZeroesAsync(count - 1, 2), "write-zeroes straddling the end");
        }

        if (disk.OffersDiscard)
        {
            AssertRefused(disk, GuestStatus.OutOfRange, await disk.DiscardAsync(count - 1, 2), "a discard straddling the end");
        }

        // Nothing of the refused requests reached the device, and the disk still serves.
        Assert.True((await Behind(device, (count - 1) * disk.BlockSize, before.Length)).AsSpan().SequenceEqual(before), "a refused request changed the last block");
        var back = new byte[before.Length];
        Assert.Equal(GuestStatus.Good, await disk.ReadAsync(count - 1, back));
        Assert.True(back.AsSpan().SequenceEqual(before));
    }

    [Fact]
    public async Task AReadOnlyExportRefusesWritesAndKeepsItsData()
    {
        string path = TempFiles.DirectIoPath();
        try
        {
            var image = new byte[DiskSize];
            new Random(23).NextBytes(image);
            await File.WriteAllBytesAsync(path, image);
            using var device = BlockDevices.Open(new BlockDeviceOptions { Engine = BlockEngine.File, Path = path, ReadOnly = true });
            Assert.True(device.Supports(BlockDeviceCapabilities.ReadOnly));
            await using var disk = await ExportAsync(device);
            Assert.True(disk.ReadOnly, "the front-end does not tell the guest that the disk is read-only");
            int bs = disk.BlockSize;
            var back = new byte[4 * bs];
            Assert.Equal(GuestStatus.Good, await disk.ReadAsync(8, back));
            Assert.True(back.AsSpan().SequenceEqual(image.AsSpan(8 * bs, 4 * bs)), "a read-only export does not read its data");

            AssertRefused(disk, GuestStatus.WriteProtected, await disk.WriteAsync(8, new byte[4 * bs]), "a write to a read-only export");
            if (disk.OffersWriteZeroes)
            {
                AssertRefused(disk, GuestStatus.WriteProtected, await disk.WriteZeroesAsync(8, 4), "write-zeroes on a read-only export");
            }

            if (disk.OffersDiscard)
            {
                AssertRefused(disk, GuestStatus.WriteProtected, await disk.DiscardAsync(8, 4), "a discard on a read-only export");
            }

            Assert.Equal(GuestStatus.Good, await disk.ReadAsync(8, back));
            Assert.True(back.AsSpan().SequenceEqual(image.AsSpan(8 * bs, 4 * bs)), "a refused write changed a read-only export");
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public async Task TransfersAtTheAnnouncedMaximumMoveEveryByte()
    {
        using var device = new MemoryBlockDevice(DiskSize);
        await using var disk = await ExportAsync(device);
        int blocks = (int)Math.Min(disk.MaxTransferBlocks, disk.BlockCount - 1);
        Assert.True(blocks > 1, $"the front-end announces {disk.MaxTransferBlocks} blocks as its largest transfer");
        var data = Pattern(disk, blocks, seed: 29);
        Assert.Equal(GuestStatus.Good, await disk.WriteAsync(1, data));
        var back = new byte[data.Length];
        Assert.Equal(GuestStatus.Good, await disk.ReadAsync(1, back));
        int diff = back.AsSpan().CommonPrefixLength(data);
        Assert.True(diff == data.Length, $"a {data.Length}-byte transfer differs at byte {diff}");
        Assert.True((await Behind(device, disk.BlockSize, data.Length)).AsSpan().SequenceEqual(data), "the device does not hold the large write");
    }

    /// <summary>A refusal, as precise as the front-end's protocol can say it.</summary>
    private static void AssertRefused(GuestDisk disk, GuestStatus cause, GuestStatus actual, string what)
        => Assert.True(actual == (disk.NamesCauses ? cause : GuestStatus.Error), $"{what} was answered {actual}, expected {(disk.NamesCauses ? cause : GuestStatus.Error)}");

    private static byte[] Pattern(GuestDisk disk, int blocks, int seed)
    {
        var data = new byte[blocks * disk.BlockSize];
        new Random(seed).NextBytes(data);
        return data;
    }

    /// <summary>What the exported device itself holds, looked at behind the front-end.</summary>
    private static async Task<byte[]> Behind(BlockDevice device, long offset, int length)
    {
        var held = new byte[length];
        int piece = Math.Min(length, device.Geometry.MaxTransferBytes);
        using var buffer = new Hci.Core.Buffers.AlignedBuffer(piece);
        for (int at = 0; at < length; at += piece)
        {
            int n = Math.Min(piece, length - at);
            await device.ReadAsync(offset + at, buffer.Memory[..n]);
            buffer.Span[..n].CopyTo(held.AsSpan(at));
        }

        return held;
    }
}
