using System.Buffers.Binary;
using Hci.Core.Buffers;
using Hci.Core.Devices;
using Hci.Transport.Scsi;

namespace Hci.Transport.Tests;

/// <summary>
/// The SCSI disk unit driven directly, without a transport: reservations seen from two I_T nexuses, unit attentions
/// after a reset, COMPARE AND WRITE's miscompare report and REPORT SUPPORTED OPERATION CODES.
/// </summary>
public sealed class ScsiDiskTests : IDisposable
{
    private const int BlockSize = 4096;
    private const int A = 1;
    private const int B = 2;

    private readonly MemoryBlockDevice _device = new(16L << 20, BlockSize);
    private readonly ScsiDisk _disk;
    private readonly List<AlignedBuffer> _buffers = [];

    public ScsiDiskTests()
    {
        _disk = new ScsiDisk(_device, "test-serial");
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
    public async Task HundredThousandRandomCdbsAndParameterListsNeverThrowAndAlwaysAnswerInScsiTerms()
    {
        // Every opcode the unit knows, and some it does not, with random fields, lengths and data: the unit must
        // answer each with a SCSI status (and sense for CHECK CONDITION), never throw, and never claim more data
        // than the buffer it was given can hold.
        byte[] opcodes =
        [
            0x00, 0x03, 0x08, 0x0A, 0x12, 0x15, 0x16, 0x17, 0x1A, 0x1B, 0x1E, 0x25, 0x28, 0x2A, 0x2E, 0x2F, 0x34, 0x35, 0x37, 0x41,
            0x42, 0x55, 0x56, 0x57, 0x5A, 0x5E, 0x5F, 0x88, 0x89, 0x8A, 0x8B, 0x8E, 0x8F, 0x90, 0x91, 0x93, 0x9E, 0xA3, 0xA8, 0xAA,
            0xAE, 0xAF, 0xB7, 0xA0, 0x9C, 0x04, 0x83, 0x84, 0xFF,
        ];
        byte[] statuses = [ScsiStatus.Good, ScsiStatus.CheckCondition, ScsiStatus.ConditionMet, ScsiStatus.ReservationConflict];
        var rng = new Random(5);
        using var buffer = new AlignedBuffer(1 << 20);
        var task = new ScsiTask();
        var seen = new Dictionary<byte, int>();
        for (int i = 0; i < 100_000; i++)
        {
            task.Reset();
            task.Nexus = 1 + rng.Next(3);
            rng.NextBytes(task.Cdb);
            task.Cdb[0] = opcodes[rng.Next(opcodes.Length)];
            if (rng.Next(2) == 0)
            {
                // Mostly small, plausible ranges, so that commands get past the first checks.
                task.Cdb[1] &= 0x1F;
                for (int b = 2; b < 10; b++)
                {
                    task.Cdb[b] = rng.Next(3) == 0 ? task.Cdb[b] : (byte)0;
                }

                task.Cdb[rng.Next(2, 14)] = (byte)rng.Next(16);
            }

            int expected = rng.Next(4) switch
            {
                0 => 0,
                1 => rng.Next(1, 64),
                2 => rng.Next(64, 8192),
                _ => rng.Next(8192, 1 << 20),
            };
            task.ExpectedLength = expected;
            task.DataOut = rng.Next(2) == 0;
            task.Buffer = expected > 0 ? buffer : null;
            rng.NextBytes(buffer.Span[..Math.Min(expected, 4096)]);
            await _disk.ExecuteAsync(task);
            Assert.Contains(task.Status, statuses);
            Assert.True(task.DataLength >= 0);
            seen[task.Status] = seen.GetValueOrDefault(task.Status) + 1;
            if (task.Status == ScsiStatus.CheckCondition)
            {
                Assert.Equal(0x70, task.Sense[0] & 0x7F);
                Assert.InRange(task.Sense[2] & 0x0F, 1, 0xE);
            }
        }

        // Both ways were taken often: the input got past the first checks as well as being refused.
        Assert.True(seen.GetValueOrDefault(ScsiStatus.Good) > 5_000, $"{seen.GetValueOrDefault(ScsiStatus.Good)} GOOD");
        Assert.True(seen.GetValueOrDefault(ScsiStatus.CheckCondition) > 5_000, $"{seen.GetValueOrDefault(ScsiStatus.CheckCondition)} CHECK CONDITION");

        // And the unit still works for a well-behaved nexus (unit attentions from random resets aside).
        var read = new ScsiTask { ExpectedLength = BlockSize, Buffer = buffer, Nexus = 9 };
        read.Cdb[0] = 0x28;
        read.Cdb[8] = 1;
        await _disk.ExecuteAsync(read);
        if (read.Status == ScsiStatus.CheckCondition && read.Sense[2] == SenseKey.UnitAttention)
        {
            await _disk.ExecuteAsync(read);
        }

        Assert.True(read.Status is ScsiStatus.Good or ScsiStatus.ReservationConflict, $"status {read.Status}");
    }

    [Fact]
    public async Task WriteExclusiveReservationBlocksOthersWritesButNotTheirReads()
    {
        Assert.Equal(ScsiStatus.Good, (await ProutAsync(A, 6, 0, 0, 0xAAAA)).Status); // REGISTER AND IGNORE
        Assert.Equal(ScsiStatus.Good, (await ProutAsync(B, 6, 0, 0, 0xBBBB)).Status);
        Assert.Equal(ScsiStatus.Good, (await ProutAsync(A, 1, 1, 0xAAAA, 0)).Status); // RESERVE, Write Exclusive

        Assert.Equal(ScsiStatus.Good, (await WriteAsync(A, 0, 1)).Status);
        Assert.Equal(ScsiStatus.ReservationConflict, (await WriteAsync(B, 0, 1)).Status);
        Assert.Equal(ScsiStatus.Good, (await RunAsync(B, Read10(0, 1), inLength: BlockSize)).Status);

        // B cannot reserve or release what A holds, and a wrong key is a conflict.
        Assert.Equal(ScsiStatus.ReservationConflict, (await ProutAsync(B, 1, 1, 0xBBBB, 0)).Status);
        Assert.Equal(ScsiStatus.ReservationConflict, (await ProutAsync(B, 1, 1, 0x1234, 0)).Status);

        // READ RESERVATION names A's key and the type; READ KEYS lists both keys.
        var rr = await RunAsync(B, Prin(1), inLength: 64);
        Assert.Equal(16u, BinaryPrimitives.ReadUInt32BigEndian(rr.Buffer!.Span[4..]));
        Assert.Equal(0xAAAAUL, BinaryPrimitives.ReadUInt64BigEndian(rr.Buffer.Span[8..]));
        Assert.Equal(1, rr.Buffer.Span[21]);
        var rk = await RunAsync(B, Prin(0), inLength: 64);
        Assert.Equal(16u, BinaryPrimitives.ReadUInt32BigEndian(rk.Buffer!.Span[4..]));

        // Released: B writes again.
        Assert.Equal(ScsiStatus.Good, (await ProutAsync(A, 2, 1, 0xAAAA, 0)).Status);
        Assert.Equal(ScsiStatus.Good, (await WriteAsync(B, 0, 1)).Status);
    }

    [Fact]
    public async Task ExclusiveAccessRegistrantsOnlyLetsRegistrantsInAndTellsThemWhenTheHolderLeaves()
    {
        await ProutAsync(A, 6, 0, 0, 0xA1);
        await ProutAsync(B, 6, 0, 0, 0xB1);
        Assert.Equal(ScsiStatus.Good, (await ProutAsync(A, 1, 6, 0xA1, 0)).Status);
        Assert.Equal(ScsiStatus.Good, (await WriteAsync(B, 1, 1)).Status); // a registrant: full access

        // The holder unregisters: the reservation goes, and only the other registrant hears of it (2A/04).
        Assert.Equal(ScsiStatus.Good, (await ProutAsync(A, 0, 0, 0xA1, 0)).Status);
        Assert.Equal(ScsiStatus.Good, (await RunAsync(A, Tur())).Status);
        var b = await RunAsync(B, Tur());
        AssertSense(b, SenseKey.UnitAttention, 0x2A, 0x04);
        Assert.Equal(ScsiStatus.Good, (await RunAsync(B, Tur())).Status); // reported once

        var rr = await RunAsync(B, Prin(1), inLength: 64);
        Assert.Equal(0u, BinaryPrimitives.ReadUInt32BigEndian(rr.Buffer!.Span[4..])); // not reserved
    }

    [Fact]
    public async Task PreemptRemovesTheOtherRegistrationAndTellsIt()
    {
        await ProutAsync(A, 6, 0, 0, 0xA1);
        await ProutAsync(B, 6, 0, 0, 0xB1);
        Assert.Equal(ScsiStatus.Good, (await ProutAsync(B, 4, 3, 0xB1, 0xA1)).Status); // PREEMPT A's key
        AssertSense(await RunAsync(A, Tur()), SenseKey.UnitAttention, 0x2A, 0x05);
        var rk = await RunAsync(B, Prin(0), inLength: 64);
        Assert.Equal(8u, BinaryPrimitives.ReadUInt32BigEndian(rk.Buffer!.Span[4..]));
        Assert.Equal(0xB1UL, BinaryPrimitives.ReadUInt64BigEndian(rk.Buffer.Span[8..]));

        // A is no longer registered: its old key is a conflict.
        Assert.Equal(ScsiStatus.ReservationConflict, (await ProutAsync(A, 0, 0, 0xA1, 0xA2)).Status);
    }

    [Fact]
    public async Task PersistentReserveRefusesMalformedRequests()
    {
        var t = await RunAsync(A, ProutCdb(0, 0, 23), dataOut: new byte[24]);
        AssertSense(t, SenseKey.IllegalRequest, 0x1A, 0); // parameter list length must be 24

        var aptpl = new byte[24];
        BinaryPrimitives.WriteUInt64BigEndian(aptpl.AsSpan(8), 5);
        aptpl[20] = 0x01;
        AssertSense(await RunAsync(A, ProutCdb(6, 0, 24), dataOut: aptpl), SenseKey.IllegalRequest, 0x26, 0); // APTPL not supported

        await ProutAsync(A, 6, 0, 0, 7);
        AssertSense(await ProutAsync(A, 1, 2, 7, 0), SenseKey.IllegalRequest, 0x24, 0); // type 2 is not a type
        AssertSense(await RunAsync(A, Prin(4), inLength: 64), SenseKey.IllegalRequest, 0x24, 0);

        var caps = await RunAsync(A, Prin(2), inLength: 8);
        Assert.Equal(0, caps.Buffer!.Span[2] & 0x01); // PTPL_C: reservations do not persist through power loss
    }

    [Fact]
    public async Task Spc2ReservationConflictsWithOtherNexusesUntilThatNexusIsLost()
    {
        Assert.Equal(ScsiStatus.Good, (await RunAsync(A, [0x16, 0, 0, 0, 0, 0])).Status);
        Assert.Equal(ScsiStatus.ReservationConflict, (await RunAsync(B, [0x16, 0, 0, 0, 0, 0])).Status);
        Assert.Equal(ScsiStatus.ReservationConflict, (await RunAsync(B, [0x1A, 0, 0x3F, 0, 255, 0], inLength: 255)).Status);
        Assert.Equal(ScsiStatus.Good, (await RunAsync(B, [0x17, 0, 0, 0, 0, 0])).Status); // RELEASE by another: no-op
        Assert.Equal(ScsiStatus.Good, (await RunAsync(B, Inquiry(), inLength: 96)).Status);
        Assert.Equal(ScsiStatus.ReservationConflict, (await ProutAsync(B, 6, 0, 0, 9)).Status);
        Assert.Equal(ScsiStatus.Good, (await RunAsync(A, [0x1A, 0, 0x3F, 0, 255, 0], inLength: 255)).Status);

        _disk.NexusLost(A);
        Assert.Equal(ScsiStatus.Good, (await RunAsync(B, [0x16, 0, 0, 0, 0, 0])).Status);
    }

    [Fact]
    public async Task ResetGivesEveryKnownNexusOneUnitAttentionAndDropsSpc2Reservations()
    {
        await RunAsync(A, Tur());
        await RunAsync(B, [0x16, 0, 0, 0, 0, 0]);
        _disk.Reset();

        Assert.Equal(ScsiStatus.Good, (await RunAsync(A, Inquiry(), inLength: 96)).Status); // INQUIRY does not take it
        AssertSense(await RunAsync(A, Tur()), SenseKey.UnitAttention, 0x29, 0x03);
        Assert.Equal(ScsiStatus.Good, (await RunAsync(A, Tur())).Status);

        // REQUEST SENSE reports and clears it.
        var sense = await RunAsync(B, [0x03, 0, 0, 0, 18, 0], inLength: 18);
        Assert.Equal(ScsiStatus.Good, sense.Status);
        Assert.Equal(SenseKey.UnitAttention, sense.Buffer!.Span[2]);
        Assert.Equal(0x29, sense.Buffer.Span[12]);
        Assert.Equal(ScsiStatus.Good, (await RunAsync(B, Tur())).Status);

        // B's RESERVE(6) went with the reset; a nexus that arrives later sees no unit attention.
        Assert.Equal(ScsiStatus.Good, (await RunAsync(A, [0x16, 0, 0, 0, 0, 0])).Status);
        Assert.Equal(ScsiStatus.Good, (await RunAsync(3, Inquiry(), inLength: 96)).Status);
        Assert.Equal(ScsiStatus.ReservationConflict, (await RunAsync(3, Tur())).Status);
    }

    [Fact]
    public async Task CompareAndWriteReportsTheMiscompareOffsetAndLeavesTheMediumAlone()
    {
        var a = Enumerable.Repeat((byte)'A', 2 * BlockSize).ToArray();
        Assert.Equal(ScsiStatus.Good, (await RunAsync(A, Write10(10, 2), dataOut: a)).Status);

        var data = new byte[4 * BlockSize];
        a.CopyTo(data, 0);
        data.AsSpan(2 * BlockSize).Fill((byte)'B');
        data[BlockSize + 100] = (byte)'C';
        var t = await RunAsync(A, Caw(10, 2), dataOut: data);
        AssertSense(t, SenseKey.Miscompare, 0x1D, 0);
        Assert.Equal(0x80, t.Sense[0] & 0x80); // INFORMATION is valid
        Assert.Equal((uint)(BlockSize + 100), BinaryPrimitives.ReadUInt32BigEndian(t.Sense[3..]));
        var read = await RunAsync(A, Read10(10, 2), inLength: 2 * BlockSize);
        Assert.True(read.Buffer!.Span[..(2 * BlockSize)].SequenceEqual(a));

        data[BlockSize + 100] = (byte)'A';
        Assert.Equal(ScsiStatus.Good, (await RunAsync(A, Caw(10, 2), dataOut: data)).Status);
        read = await RunAsync(A, Read10(10, 2), inLength: 2 * BlockSize);
        Assert.Equal(-1, read.Buffer!.Span[..(2 * BlockSize)].IndexOfAnyExcept((byte)'B'));

        // The Data-Out must hold exactly the verify and the write data.
        AssertSense(await RunAsync(A, Caw(10, 2), dataOut: new byte[3 * BlockSize]), SenseKey.IllegalRequest, 0x24, 0);
    }

    [Fact]
    public async Task ModeSelectTurnsTheWriteCacheOffAndModeSenseThenReportsItOff()
    {
        // MODE SENSE says WCE is changeable: a MODE SELECT that clears it must take effect (or be refused).
        Assert.Equal(0x04, await CachingByteAsync(control: 1) & 0x04);
        Assert.Equal(0x04, await CachingByteAsync(control: 0) & 0x04);
        Assert.Equal(ScsiStatus.Good, (await RunAsync(A, ModeSelect6(24), dataOut: CachingPage(wce: false))).Status);
        Assert.Equal(0, await CachingByteAsync(control: 0) & 0x04);

        // Writes still work with the cache off (each written through), and the cache can be turned back on.
        Assert.Equal(ScsiStatus.Good, (await WriteAsync(A, 0, 1)).Status);
        Assert.Equal(ScsiStatus.Good, (await RunAsync(A, ModeSelect6(24), dataOut: CachingPage(wce: true))).Status);
        Assert.Equal(0x04, await CachingByteAsync(control: 0) & 0x04);
    }

    [Fact]
    public async Task ModeSelectRefusesChangesToFieldsThatAreNotChangeableAndSavingPages()
    {
        var page = CachingPage(wce: false);
        page[4 + 2] |= 0x01; // RCD: not changeable
        AssertSense(await RunAsync(A, ModeSelect6(24), dataOut: page), SenseKey.IllegalRequest, 0x26, 0);
        var cdb = ModeSelect6(24);
        cdb[1] |= 0x01; // SP: saving is not supported
        AssertSense(await RunAsync(A, cdb, dataOut: CachingPage(wce: false)), SenseKey.IllegalRequest, 0x24, 0);
        var unknown = CachingPage(wce: false);
        unknown[4] = 0x19; // a page this unit does not have
        AssertSense(await RunAsync(A, ModeSelect6(24), dataOut: unknown), SenseKey.IllegalRequest, 0x26, 0);
        AssertSense(await RunAsync(A, ModeSelect6(30), dataOut: CachingPage(wce: false)), SenseKey.IllegalRequest, 0x1A, 0);

        // None of them changed anything.
        Assert.Equal(0x04, await CachingByteAsync(control: 0) & 0x04);
    }

    [Fact]
    public async Task WriteSameWithUnmapAndANonZeroBlockWritesThePattern()
    {
        var cdb = new byte[16];
        cdb[0] = 0x93;
        cdb[1] = 0x08; // UNMAP
        BinaryPrimitives.WriteUInt64BigEndian(cdb.AsSpan(2), 20);
        BinaryPrimitives.WriteUInt32BigEndian(cdb.AsSpan(10), 3);
        var block = Enumerable.Repeat((byte)0xAB, BlockSize).ToArray();
        Assert.Equal(ScsiStatus.Good, (await RunAsync(A, cdb, dataOut: block)).Status);
        var read = await RunAsync(A, Read10(20, 3), inLength: 3 * BlockSize);
        Assert.Equal(-1, read.Buffer!.Span[..(3 * BlockSize)].IndexOfAnyExcept((byte)0xAB));

        // With a zero block the range is unmapped and reads back as zeros.
        Assert.Equal(ScsiStatus.Good, (await RunAsync(A, cdb, dataOut: new byte[BlockSize])).Status);
        read = await RunAsync(A, Read10(20, 3), inLength: 3 * BlockSize);
        Assert.Equal(-1, read.Buffer!.Span[..(3 * BlockSize)].IndexOfAnyExcept((byte)0));
    }

    [Fact]
    public async Task CompareAndWriteWaitsForAnOverlappingPlainWriteOfAnotherNexusAtTheDevice()
    {
        // The block holds 'O'. A plain WRITE of 'W' from A has reached the device but not the medium; B's COMPARE AND
        // WRITE expects 'O' and writes 'N'. Compared with 'O' and then overwritten by A's write would be a lost update
        // (both GOOD, the medium 'N'): the compare must see A's write, so it miscompares and the medium keeps 'W'.
        using var stall = new StallWritesBlockDevice(_device);
        var disk = new ScsiDisk(stall, "stall");
        Assert.Equal(ScsiStatus.Good, (await RunAsync(disk, A, Write10(30, 1), Fill('O', BlockSize))).Status);
        stall.Stall();
        Task<ScsiTask> write, caw;
        try
        {
            write = RunAsync(disk, A, Write10(30, 1), Fill('W', BlockSize));
            stall.WaitHeld(1);
            var data = Fill('O', 2 * BlockSize);
            data.AsSpan(BlockSize).Fill((byte)'N');
            caw = RunAsync(disk, B, Caw(30, 1), data);

            // Released once it has compared and reached the device with its write, or waits for A's write.
            Assert.True(SpinWait.SpinUntil(() => stall.Held >= 2 || disk.AtomicWaits > 0, TimeSpan.FromSeconds(30)));
        }
        finally
        {
            stall.Release();
        }

        Assert.Equal(ScsiStatus.Good, (await write).Status);
        var t = await caw;
        AssertSense(t, SenseKey.Miscompare, 0x1D, 0);
        var read = await RunAsync(disk, A, Read10(30, 1), inLength: BlockSize);
        Assert.Equal(-1, read.Buffer!.Span[..BlockSize].IndexOfAnyExcept((byte)'W'));
    }

    [Fact]
    public async Task PreemptAndAbortAnswersOnlyOnceThePreemptedNexusWritesAtTheDeviceHaveFinished()
    {
        using var stall = new StallWritesBlockDevice(_device);
        var disk = new ScsiDisk(stall, "stall");
        Assert.Equal(ScsiStatus.Good, (await ProutAsync(disk, A, 6, 0, 0, 0xAAAA)).Status);
        Assert.Equal(ScsiStatus.Good, (await ProutAsync(disk, B, 6, 0, 0, 0xBBBB)).Status);
        Assert.Equal(ScsiStatus.Good, (await ProutAsync(disk, A, 1, 1, 0xAAAA, 0)).Status); // A holds Write Exclusive

        // A's write is at the device when B preempts A and aborts its tasks (fencing A off).
        stall.Stall();
        Task<ScsiTask> write, preempt;
        bool writeDoneFirst = false;
        Task answered;
        try
        {
            write = RunAsync(disk, A, Write10(40, 1), Fill('A', BlockSize));
            stall.WaitHeld(1);
            preempt = ProutAsync(disk, B, 5, 1, 0xBBBB, 0xAAAA);
            answered = preempt.ContinueWith(_ => writeDoneFirst = write.IsCompleted, TaskScheduler.Default);
            Assert.False(preempt.IsCompleted, "PREEMPT AND ABORT answered while the preempted nexus's write was still at the device");
        }
        finally
        {
            stall.Release();
        }

        Assert.Equal(ScsiStatus.Good, (await preempt).Status);
        await answered;
        Assert.True(writeDoneFirst);

        // From here A is fenced off: told once that its registration went, then its writes conflict.
        AssertSense(await RunAsync(disk, A, Write10(40, 1), Fill('X', BlockSize)), SenseKey.UnitAttention, 0x2A, 0x05);
        Assert.Equal(ScsiStatus.ReservationConflict, (await RunAsync(disk, A, Write10(40, 1), Fill('X', BlockSize))).Status);
    }

    [Fact]
    public async Task VerifyOfSixteenMebibytesAgainstOneBlockReadsTheMediumInBoundedPiecesAndFindsTheMiscompare()
    {
        // BYTCHK 11b: every block of the range is compared with the one block of Data-Out. 16 MiB of medium must not
        // be read into one 16 MiB buffer per command (outside every budget): at most a 1 MiB piece at a time.
        var cdb = new byte[16];
        cdb[0] = 0x8F;
        cdb[1] = 0x06;
        BinaryPrimitives.WriteUInt32BigEndian(cdb.AsSpan(10), (16 << 20) / BlockSize);
        Assert.Equal(ScsiStatus.Good, (await RunAsync(A, cdb, dataOut: new byte[BlockSize])).Status);
        var block = new byte[BlockSize];
        block[7] = 1;
        Assert.Equal(ScsiStatus.Good, (await RunAsync(A, Write10(4000, 1), dataOut: block)).Status);
        var t = await RunAsync(A, cdb, dataOut: new byte[BlockSize]);
        AssertSense(t, SenseKey.Miscompare, 0x1D, 0);
        Assert.Equal((uint)((4000 * BlockSize) + 7), BinaryPrimitives.ReadUInt32BigEndian(t.Sense[3..]));
        Assert.InRange(_disk.LargestScratchBytes, 1, 1 << 20);
    }

    [Fact]
    public async Task ReportSupportedOperationCodesListsEveryCommandAndDescribesOne()
    {
        var all = await RunAsync(A, Rsoc(0x80, 0, 0), inLength: 8192); // all commands, with timeouts
        Assert.Equal(ScsiStatus.Good, all.Status);
        int length = (int)BinaryPrimitives.ReadUInt32BigEndian(all.Buffer!.Span);
        Assert.Equal(0, length % 20);
        var found = new HashSet<(int Opcode, int Action, bool ServiceAction)>();
        for (int at = 4; at < 4 + length; at += 20)
        {
            var d = all.Buffer.Span[at..];
            Assert.Equal(0x02, d[5] & 0x02); // CTDP
            Assert.Equal(0x0A, BinaryPrimitives.ReadUInt16BigEndian(d[8..]));
            found.Add((d[0], BinaryPrimitives.ReadUInt16BigEndian(d[2..]), (d[5] & 0x01) != 0));
        }

        Assert.Contains((0x89, 0, false), found);
        Assert.Contains((0x5E, 3, true), found);
        Assert.Contains((0xA3, 0x0C, true), found);

        var read10 = await RunAsync(A, Rsoc(1, 0x28, 0), inLength: 64);
        Assert.Equal(0x03, read10.Buffer!.Span[1] & 0x07); // supported
        Assert.Equal(10, BinaryPrimitives.ReadUInt16BigEndian(read10.Buffer.Span[2..]));
        Assert.Equal(0x28, read10.Buffer.Span[4]);
        Assert.Equal(0x18, read10.Buffer.Span[5] & 0x18); // DPO and FUA

        AssertSense(await RunAsync(A, Rsoc(1, 0x5E, 0), inLength: 64), SenseKey.IllegalRequest, 0x24, 0); // has service actions
        AssertSense(await RunAsync(A, Rsoc(2, 0x28, 0), inLength: 64), SenseKey.IllegalRequest, 0x24, 0); // has none
        var prin = await RunAsync(A, Rsoc(2, 0x5E, 1), inLength: 64);
        Assert.Equal(0x03, prin.Buffer!.Span[1] & 0x07);
        var unknown = await RunAsync(A, Rsoc(1, 0xC0, 0), inLength: 64);
        Assert.Equal(0x01, unknown.Buffer!.Span[1] & 0x07); // not supported
        AssertSense(await RunAsync(A, Rsoc(5, 0x28, 0), inLength: 64), SenseKey.IllegalRequest, 0x24, 0);
    }

    [Fact]
    public async Task RangesAndLengthsAreChecked()
    {
        long blocks = _device.Geometry.BlockCount;
        var lbaStatus = new byte[16];
        lbaStatus[0] = 0x9E;
        lbaStatus[1] = 0x12;
        BinaryPrimitives.WriteUInt64BigEndian(lbaStatus.AsSpan(2), (ulong)blocks);
        BinaryPrimitives.WriteUInt32BigEndian(lbaStatus.AsSpan(10), 24);
        AssertSense(await RunAsync(A, lbaStatus, inLength: 24), SenseKey.IllegalRequest, 0x21, 0);
        BinaryPrimitives.WriteUInt64BigEndian(lbaStatus.AsSpan(2), (ulong)blocks - 1);
        var t = await RunAsync(A, lbaStatus, inLength: 24);
        Assert.Equal(ScsiStatus.Good, t.Status);
        Assert.Equal(1u, BinaryPrimitives.ReadUInt32BigEndian(t.Buffer!.Span[16..]));

        // WRITE SAME: zero blocks past the end is out of range; a Data-Out other than one block is refused.
        var ws = new byte[] { 0x41, 0, 0, 0, 0, 0, 0, 0, 0, 0 };
        BinaryPrimitives.WriteUInt32BigEndian(ws.AsSpan(2), (uint)blocks + 1);
        AssertSense(await RunAsync(A, ws, dataOut: new byte[BlockSize]), SenseKey.IllegalRequest, 0x21, 0);
        BinaryPrimitives.WriteUInt32BigEndian(ws.AsSpan(2), 0);
        ws[8] = 1;
        AssertSense(await RunAsync(A, ws, dataOut: new byte[2 * BlockSize]), SenseKey.IllegalRequest, 0x24, 0);

        AssertSense(await RunAsync(A, [0xC0, 0, 0, 0, 0, 0]), SenseKey.IllegalRequest, 0x20, 0);
    }

    private static void AssertSense(ScsiTask t, byte key, byte asc, byte ascq)
    {
        Assert.Equal(ScsiStatus.CheckCondition, t.Status);
        Assert.Equal(key, t.Sense[2] & 0x0F);
        Assert.Equal((asc, ascq), (t.Sense[12], t.Sense[13]));
    }

    private Task<ScsiTask> RunAsync(int nexus, byte[] cdb, byte[]? dataOut = null, int inLength = 0) => RunAsync(_disk, nexus, cdb, dataOut, inLength);

    private static byte[] Fill(char c, int length) => Enumerable.Repeat((byte)c, length).ToArray();

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

    private Task<ScsiTask> WriteAsync(int nexus, uint lba, ushort blocks) => RunAsync(nexus, Write10(lba, blocks), dataOut: new byte[blocks * BlockSize]);

    private Task<ScsiTask> ProutAsync(int nexus, byte action, byte type, ulong key, ulong serviceKey) => ProutAsync(_disk, nexus, action, type, key, serviceKey);

    private Task<ScsiTask> ProutAsync(ScsiDisk disk, int nexus, byte action, byte type, ulong key, ulong serviceKey)
    {
        var list = new byte[24];
        BinaryPrimitives.WriteUInt64BigEndian(list, key);
        BinaryPrimitives.WriteUInt64BigEndian(list.AsSpan(8), serviceKey);
        return RunAsync(disk, nexus, ProutCdb(action, type, 24), dataOut: list);
    }

    private static byte[] ProutCdb(byte action, byte type, uint length)
    {
        var cdb = new byte[10];
        cdb[0] = 0x5F;
        cdb[1] = action;
        cdb[2] = type;
        BinaryPrimitives.WriteUInt32BigEndian(cdb.AsSpan(5), length);
        return cdb;
    }

    private async Task<byte> CachingByteAsync(int control)
    {
        var t = await RunAsync(A, [0x1A, 0x08, (byte)((control << 6) | 0x08), 0, 64, 0], inLength: 64);
        Assert.Equal(ScsiStatus.Good, t.Status);
        int header = 4 + t.Buffer!.Span[3];
        Assert.Equal(0x08, t.Buffer.Span[header] & 0x3F);
        return t.Buffer.Span[header + 2];
    }

    private static byte[] ModeSelect6(byte length) => [0x15, 0x10, 0, 0, length, 0];

    // A MODE SELECT parameter list: the 4-byte header, no block descriptor, the caching page as MODE SENSE shows it.
    private static byte[] CachingPage(bool wce)
    {
        var list = new byte[4 + 20];
        list[4] = 0x08;
        list[5] = 0x12;
        list[6] = wce ? (byte)0x04 : (byte)0;
        return list;
    }

    private static byte[] Prin(byte action) => [0x5E, action, 0, 0, 0, 0, 0, 0, 64, 0];

    private static byte[] Tur() => [0, 0, 0, 0, 0, 0];

    private static byte[] Inquiry() => [0x12, 0, 0, 0, 96, 0];

    private static byte[] Read10(uint lba, ushort blocks) => Rw10(0x28, lba, blocks);

    private static byte[] Write10(uint lba, ushort blocks) => Rw10(0x2A, lba, blocks);

    private static byte[] Rw10(byte op, uint lba, ushort blocks)
    {
        var cdb = new byte[10];
        cdb[0] = op;
        BinaryPrimitives.WriteUInt32BigEndian(cdb.AsSpan(2), lba);
        BinaryPrimitives.WriteUInt16BigEndian(cdb.AsSpan(7), blocks);
        return cdb;
    }

    private static byte[] Caw(ulong lba, byte blocks)
    {
        var cdb = new byte[16];
        cdb[0] = 0x89;
        BinaryPrimitives.WriteUInt64BigEndian(cdb.AsSpan(2), lba);
        cdb[13] = blocks;
        return cdb;
    }

    private static byte[] Rsoc(byte options, byte opcode, ushort action)
    {
        var cdb = new byte[12];
        cdb[0] = 0xA3;
        cdb[1] = 0x0C;
        cdb[2] = options;
        cdb[3] = opcode;
        BinaryPrimitives.WriteUInt16BigEndian(cdb.AsSpan(4), action);
        BinaryPrimitives.WriteUInt32BigEndian(cdb.AsSpan(6), 8192);
        return cdb;
    }
}
