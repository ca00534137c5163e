using System.Buffers.Binary;
using Hci.Core.Buffers;
using Hci.Core.Devices;
using Hci.Testing;
using Hci.Transport.Scsi;

namespace Hci.Transport.Tests;

/// <summary>
/// WRITE ATOMIC (16) on the SCSI disk unit alone: the limits it reports, the writes it takes and the ones it refuses,
/// and its atomicity against a plain write of another nexus. The unit has 512-byte blocks, so that atomic writes
/// are held to 4 KiB pages (alignment and granularity of 8 blocks), and a 64 KiB device transfer (128 blocks at most).
/// </summary>
public sealed class ScsiWriteAtomicTests : IDisposable
{
    private const int BlockSize = 512;
    private const int Blocks = 2048;
    private const int MaxAtomic = 128;
    private const int Align = 8;

    private readonly MemoryBlockDevice _device = new((long)Blocks * BlockSize, BlockSize, maxTransferBytes: MaxAtomic * BlockSize);
    private readonly ScsiDisk _disk;
    private readonly List<AlignedBuffer> _buffers = [];

    public ScsiWriteAtomicTests()
    {
        _disk = new ScsiDisk(_device, "atomic");
    }

    public void Dispose()
    {
        foreach (var b in _buffers)
        {
            ((IDisposable)b).Dispose();
        }

        _device.Dispose();
    }

    [Fact]
    public async Task BlockLimitsReportTheAtomicLimitsAndReportSupportedOperationCodesDescribesWriteAtomic()
    {
        var vpd = await RunAsync(_disk, 1, [0x12, 0x01, 0xB0, 0, 255, 0], inLength: 255);
        Assert.Equal(ScsiStatus.Good, vpd.Status);
        var page = vpd.Buffer!.Span;
        Assert.Equal(0x3C, BinaryPrimitives.ReadUInt16BigEndian(page[2..]));
        uint maxTransfer = BinaryPrimitives.ReadUInt32BigEndian(page[8..]);
        Assert.Equal((uint)MaxAtomic, BinaryPrimitives.ReadUInt32BigEndian(page[44..])); // maximum atomic transfer length
        Assert.True(BinaryPrimitives.ReadUInt32BigEndian(page[44..]) <= maxTransfer);
        Assert.Equal((uint)Align, BinaryPrimitives.ReadUInt32BigEndian(page[48..])); // atomic alignment
        Assert.Equal((uint)Align, BinaryPrimitives.ReadUInt32BigEndian(page[52..])); // granularity
        Assert.Equal(0u, BinaryPrimitives.ReadUInt32BigEndian(page[56..])); // no atomic boundaries
        Assert.Equal(0u, BinaryPrimitives.ReadUInt32BigEndian(page[60..]));

        var rsoc = await RunAsync(_disk, 1, [0xA3, 0x0C, 0x01, 0x9C, 0, 0, 0, 0, 0, 64, 0, 0], inLength: 64);
        Assert.Equal(ScsiStatus.Good, rsoc.Status);
        Assert.Equal(0x03, rsoc.Buffer!.Span[1] & 0x07); // supported
        Assert.Equal(16, BinaryPrimitives.ReadUInt16BigEndian(rsoc.Buffer.Span[2..]));
        Assert.Equal(0x9C, rsoc.Buffer.Span[4]);
        Assert.Equal(0x18, rsoc.Buffer.Span[5] & 0x18); // DPO and FUA, as MODE SENSE's DPOFUA promises
    }

    [Fact]
    public async Task AnAtomicWriteWithFuaReadsBackWhole()
    {
        var data = Fill('A', 16 * BlockSize);
        data[5 * BlockSize] = (byte)'Z';
        var t = await RunAsync(_disk, 1, WriteAtomic(Align, 16, fua: true), data);
        Assert.Equal(ScsiStatus.Good, t.Status);
        var read = await RunAsync(_disk, 1, Read16(Align, 16), inLength: 16 * BlockSize);
        Assert.Equal(ScsiStatus.Good, read.Status);
        Assert.True(read.Buffer!.Span[..(16 * BlockSize)].SequenceEqual(data));
    }

    [Fact]
    public async Task TheLargestAtomicWriteAndOneAtTheEndOfTheUnitAreTaken()
    {
        Assert.Equal(ScsiStatus.Good, (await RunAsync(_disk, 1, WriteAtomic(0, MaxAtomic), Fill('M', MaxAtomic * BlockSize))).Status);
        Assert.Equal(ScsiStatus.Good, (await RunAsync(_disk, 1, WriteAtomic(Blocks - Align, Align), Fill('E', Align * BlockSize))).Status);
        var read = await RunAsync(_disk, 1, Read16(Blocks - Align, Align), inLength: Align * BlockSize);
        Assert.Equal(-1, read.Buffer!.Span[..(Align * BlockSize)].IndexOfAnyExcept((byte)'E'));
    }

    [Fact]
    public async Task ZeroBlocksIsGoodWithinTheUnitAndOutOfRangePastIt()
    {
        Assert.Equal(ScsiStatus.Good, (await RunAsync(_disk, 1, WriteAtomic(0, 0))).Status);
        Assert.Equal(ScsiStatus.Good, (await RunAsync(_disk, 1, WriteAtomic(Blocks, 0))).Status);
        AssertSense(await RunAsync(_disk, 1, WriteAtomic(Blocks + Align, 0)), SenseKey.IllegalRequest, 0x21);
        AssertSense(await RunAsync(_disk, 1, WriteAtomic(1UL << 63, 0)), SenseKey.IllegalRequest, 0x21);
        AssertSense(await RunAsync(_disk, 1, WriteAtomic(ulong.MaxValue - Align + 1, 0)), SenseKey.IllegalRequest, 0x21);
    }

    [Fact]
    public async Task RangesPastTheEndAreOutOfRangeEvenWhenTheLbaPlusLengthWrapsPastTwoToTheSixtyFourth()
    {
        AssertSense(await RunAsync(_disk, 1, WriteAtomic(Blocks - Align, 2 * Align), Fill('X', 2 * Align * BlockSize)), SenseKey.IllegalRequest, 0x21);
        AssertSense(await RunAsync(_disk, 1, WriteAtomic(Blocks, Align), Fill('X', Align * BlockSize)), SenseKey.IllegalRequest, 0x21);
        AssertSense(await RunAsync(_disk, 1, WriteAtomic(ulong.MaxValue - Align + 1, 2 * Align), Fill('X', 2 * Align * BlockSize)), SenseKey.IllegalRequest, 0x21);
        AssertSense(await RunAsync(_disk, 1, WriteAtomic(1UL << 63, Align), Fill('X', Align * BlockSize)), SenseKey.IllegalRequest, 0x21);

        // Past the end is out of range even when the length is also more than an atomic write may cover.
        AssertSense(await RunAsync(_disk, 1, WriteAtomic(Blocks - Align, 256), Fill('X', 256 * BlockSize)), SenseKey.IllegalRequest, 0x21);
    }

    [Fact]
    public async Task TooLongMisalignedOrPartialAtomicWritesAreInvalidFieldsAndLeaveTheMediumAlone()
    {
        AssertSense(await RunAsync(_disk, 1, WriteAtomic(0, MaxAtomic + Align), Fill('X', (MaxAtomic + Align) * BlockSize)), SenseKey.IllegalRequest, 0x24);
        AssertSense(await RunAsync(_disk, 1, WriteAtomic(1, Align), Fill('X', Align * BlockSize)), SenseKey.IllegalRequest, 0x24); // alignment
        AssertSense(await RunAsync(_disk, 1, WriteAtomic(0, 1), Fill('X', BlockSize)), SenseKey.IllegalRequest, 0x24); // granularity
        AssertSense(await RunAsync(_disk, 1, WriteAtomic(0, Align), Fill('X', (Align - 1) * BlockSize)), SenseKey.IllegalRequest, 0x24); // short Data-Out

        var wrprotect = WriteAtomic(0, Align);
        wrprotect[1] |= 0x20;
        AssertSense(await RunAsync(_disk, 1, wrprotect, Fill('X', Align * BlockSize)), SenseKey.IllegalRequest, 0x24);
        var boundary = WriteAtomic(0, Align);
        boundary[11] = 1;
        AssertSense(await RunAsync(_disk, 1, boundary, Fill('X', Align * BlockSize)), SenseKey.IllegalRequest, 0x24);

        var read = await RunAsync(_disk, 1, Read16(0, MaxAtomic + Align), inLength: (MaxAtomic + Align) * BlockSize);
        Assert.Equal(-1, read.Buffer!.Span[..((MaxAtomic + Align) * BlockSize)].IndexOfAnyExcept((byte)0));
    }

    [Fact]
    public async Task AnAtomicWriteWaitsForAnOverlappingPlainWriteOfAnotherNexusAtTheDevice()
    {
        // A plain WRITE of 'W' from nexus 1 has reached the device but not the medium; nexus 2's WRITE ATOMIC of 'N'
        // over the same blocks must not reach the device until it has finished, so the medium ends all 'N'.
        using var stall = new StallWritesBlockDevice(_device);
        var disk = new ScsiDisk(stall, "stall");
        Task<ScsiTask> plain, atomic;
        stall.Stall();
        try
        {
            var write16 = Read16(0, 2 * Align);
            write16[0] = 0x8A;
            plain = RunAsync(disk, 1, write16, Fill('W', 2 * Align * BlockSize));
            stall.WaitHeld(1);
            atomic = RunAsync(disk, 2, WriteAtomic(Align, Align), Fill('N', Align * BlockSize));
            Assert.True(SpinWait.SpinUntil(() => disk.AtomicWaits > 0, TimeSpan.FromSeconds(30)), "the atomic write never waited");
            Assert.Equal(1, stall.Held); // the atomic write is not at the device
            Assert.False(atomic.IsCompleted);
        }
        finally
        {
            stall.Release();
        }

        Assert.Equal(ScsiStatus.Good, (await plain).Status);
        Assert.Equal(ScsiStatus.Good, (await atomic).Status);
        var read = await RunAsync(disk, 1, Read16(0, 2 * Align), inLength: 2 * Align * BlockSize);
        Assert.Equal(-1, read.Buffer!.Span[..(Align * BlockSize)].IndexOfAnyExcept((byte)'W'));
        Assert.Equal(-1, read.Buffer.Span[(Align * BlockSize)..(2 * Align * BlockSize)].IndexOfAnyExcept((byte)'N'));
    }

    private static byte[] WriteAtomic(ulong lba, ushort blocks, bool fua = false)
    {
        var cdb = new byte[16];
        cdb[0] = 0x9C;
        cdb[1] = fua ? (byte)0x08 : (byte)0;
        BinaryPrimitives.WriteUInt64BigEndian(cdb.AsSpan(2), lba);
        BinaryPrimitives.WriteUInt16BigEndian(cdb.AsSpan(12), blocks);
        return cdb;
    }

    private static byte[] Read16(ulong lba, uint blocks)
    {
        var cdb = new byte[16];
        cdb[0] = 0x88;
        BinaryPrimitives.WriteUInt64BigEndian(cdb.AsSpan(2), lba);
        BinaryPrimitives.WriteUInt32BigEndian(cdb.AsSpan(10), blocks);
        return cdb;
    }

    private static byte[] Fill(char c, int length) => Enumerable.Repeat((byte)c, length).ToArray();

    private static void AssertSense(ScsiTask t, byte key, byte asc)
    {
        Assert.Equal(ScsiStatus.CheckCondition, t.Status);
        Assert.Equal(key, t.Sense[2] & 0x0F);
        Assert.Equal((asc, (byte)0), (t.Sense[12], t.Sense[13]));
    }

    private async Task<ScsiTask> RunAsync(ScsiDisk disk, int nexus, byte[] cdb, byte[]? dataOut = null, int inLength = 0)
    {
        var task = new ScsiTask { Nexus = nexus };
        cdb.CopyTo(task.Cdb, 0);
        int length = dataOut?.Length ?? inLength;
        if (length > 0)
        {
            var buffer = new AlignedBuffer(length);
            _buffers.Add(buffer);
            dataOut?.CopyTo(buffer.Span);
            task.Buffer = buffer;
            task.ExpectedLength = length;
            task.DataOut = dataOut != null;
        }

        await disk.ExecuteAsync(task);
        return task;
    }
}
