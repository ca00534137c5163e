using System.Buffers.Binary;
using System.Diagnostics;
using Hci.Core.Buffers;
using Hci.Transport.Scsi;

namespace Hci.Transport.Tests.Fuzz;

/// <summary>
/// Structured boundary fuzzing of SCSI CDBs against <see cref="ScsiDisk"/> on a device that checks every request
/// it is given. Draws: the block commands (READ/WRITE/VERIFY 6/10/12/16, WRITE SAME 10/16, COMPARE AND WRITE,
/// SYNCHRONIZE CACHE, UNMAP, GET LBA STATUS, PRE-FETCH) with LBAs at 0, 1, the last block, the capacity and one
/// past, 2^21 - 1, 2^32 ± 1, 2^63 and 2^64 - 1, and transfer lengths at 0, 1, 255, 256, the unit's maximum ± 1,
/// 2^16 ± 1 and 2^32 - 1; the reporting commands (INQUIRY and its VPD pages, MODE SENSE 6/10, READ CAPACITY 10/16,
/// REPORT LUNS, REQUEST SENSE, REPORT SUPPORTED OPERATION CODES, PERSISTENT RESERVE IN) with allocation lengths at
/// 0, 1, 2, 3, 4, 7, 8, 35, 36, 255, 256, 65535 and 2^32 - 1; UNMAP and PERSISTENT RESERVE OUT parameter lists with
/// edge-valued descriptors and lengths; expected transfer lengths and buffer sizes at the same edges, sometimes
/// smaller than the CDB asks; the wrong direction; several nexuses.
/// <para>Checks, per command: it completes within 5 s (no hang) and never throws; the status is GOOD, CHECK
/// CONDITION (with fixed-format sense and a valid key), CONDITION MET or RESERVATION CONFLICT; the data length is
/// never negative nor over 16 MiB, and nothing is written into the buffer past the expected length; a READ or WRITE answered GOOD lies inside the
/// medium; the device is never given an out-of-range or over-long request.</para>
/// </summary>
public sealed class ScsiCdbFuzzTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private const int BlockSize = 512;
    private const long Capacity = 16L << 20;

    [Fact]
    public async Task BoundaryCdbsAreAllAnsweredInScsiTermsAndNeverReachPastTheMedium()
    {
        using var device = new CheckingBlockDevice(BlockSize, Capacity, 128 << 10, 64, 1);
        var disk = new ScsiDisk(device, "fuzz-serial");
        using var big = new AlignedBuffer(1 << 20);
        var watch = Stopwatch.StartNew();
        var counts = new Dictionary<byte, int>();
        int n = 0;
        for (int seed = 1; watch.Elapsed < TimeSpan.FromSeconds(15); seed++)
        {
            var b = new Boundary(seed);
            for (int i = 0; i < 500; i++, n++)
            {
                var task = new ScsiTask();
                string cdb = Draw(b, task, disk.MaxTransferBytes);
                int bufferLength = b.Next(4) switch
                {
                    0 => 0,
                    1 => Math.Min(task.ExpectedLength, big.Length),
                    _ => big.Length,
                };
                using var small = bufferLength is > 0 and < 1 << 20 ? new AlignedBuffer(bufferLength) : null;
                task.Buffer = bufferLength == 0 ? null : (small ?? big);
                if (task.ExpectedLength > (task.Buffer?.Length ?? 0))
                {
                    task.ExpectedLength = task.Buffer?.Length ?? 0; // a transport never expects more than it holds
                }

                FillParameters(b, task);
                bool canary = task.Buffer != null && task.Buffer.Length >= task.ExpectedLength + 256;
                if (canary)
                {
                    task.Buffer!.Span.Slice(task.ExpectedLength, 256).Fill(0xA5);
                }

                var run = disk.ExecuteAsync(task).AsTask();
                var outcome = await Record.ExceptionAsync(() => run.WaitAsync(TimeSpan.FromSeconds(5)));
                Assert.False(outcome is TimeoutException, $"seed {seed} case {i}: hang: {cdb}");
                await run; // rethrows
                string where = $"seed {seed} case {i}: {cdb} expected {task.ExpectedLength} buffer {task.Buffer?.Length ?? 0}";
                Assert.True(task.Status is ScsiStatus.Good or ScsiStatus.CheckCondition or ScsiStatus.ConditionMet or ScsiStatus.ReservationConflict, $"{where}: status 0x{task.Status:x2}");
                // DataLength is what the CDB describes (the transport reports the difference as a residual); what
                // lands in the buffer must stay within the expected length.
                Assert.True(task.DataLength is >= 0 and <= 16 << 20, $"{where}: data length {task.DataLength}");
                // Past the expected length only what the CDB itself asked for may land (a read of a whole block
                // whose first bytes were expected returns real data there, never stale bytes), and nothing past it.
                int touched = canary ? task.Buffer!.Span.Slice(task.ExpectedLength, 256).LastIndexOfAnyExcept((byte)0xA5) : -1;
                Assert.True(touched < 0 || task.ExpectedLength + touched < task.DataLength, $"{where}: bytes written past the expected length and past what the CDB asked for");
                if (task.Status == ScsiStatus.CheckCondition)
                {
                    Assert.True((task.Sense[0] & 0x7F) == 0x70 && (task.Sense[2] & 0x0F) is >= 1 and <= 0xE, $"{where}: sense {Convert.ToHexString(task.Sense)}");
                }

                if (task.Status == ScsiStatus.Good && Range(task.Cdb) is var (lba, blocks) && (lba > (ulong)(Capacity / BlockSize) || lba + blocks > (ulong)(Capacity / BlockSize)))
                {
                    Assert.Fail($"{where}: GOOD for blocks {lba}+{blocks} past the medium");
                }

                Assert.True(device.Violations.Count == 0, $"{where}: the device was given: {string.Join("; ", device.Violations)}");
                counts[task.Status] = counts.GetValueOrDefault(task.Status) + 1;
            }
        }

        output.WriteLine($"{n} CDBs in {watch.Elapsed.TotalSeconds:F1} s; {device.Seen} device requests; statuses {string.Join(", ", counts.Select(kv => $"0x{kv.Key:x2}: {kv.Value}"))}");
        Assert.True(counts.GetValueOrDefault(ScsiStatus.Good) > 100 && counts.GetValueOrDefault(ScsiStatus.CheckCondition) > 100);
    }

    private static readonly ulong Blocks = (ulong)(Capacity / BlockSize);

    private static ulong Lba(Boundary b) => b.Edge([0, 1, Blocks - 1, Blocks, Blocks + 1, Blocks - 256, (1UL << 21) - 1, (1UL << 32) - 1, 1UL << 32, (1UL << 32) + 1, 1UL << 63, ulong.MaxValue]);

    private static ulong Length(Boundary b, int maxTransfer) =>
        b.Edge([0, 1, 2, 255, 256, (ulong)(maxTransfer / BlockSize) - 1, (ulong)(maxTransfer / BlockSize), (ulong)(maxTransfer / BlockSize) + 1, 65535, 65536, 65537, uint.MaxValue]);

    private static uint Allocation(Boundary b) => (uint)b.Edge([0, 1, 2, 3, 4, 5, 7, 8, 12, 16, 24, 35, 36, 252, 255, 256, 4095, 4096, 65535, 65536, uint.MaxValue]);

    // The range a read or write CDB names, to check a GOOD against the medium.
    private static (ulong Lba, ulong Blocks)? Range(byte[] cdb) => cdb[0] switch
    {
        0x08 or 0x0A => (((ulong)(cdb[1] & 0x1F) << 16) | ((ulong)cdb[2] << 8) | cdb[3], cdb[4] == 0 ? 256UL : cdb[4]),
        0x28 or 0x2A or 0x2E or 0x2F => (BinaryPrimitives.ReadUInt32BigEndian(cdb.AsSpan(2)), BinaryPrimitives.ReadUInt16BigEndian(cdb.AsSpan(7))),
        0xA8 or 0xAA or 0xAE or 0xAF => (BinaryPrimitives.ReadUInt32BigEndian(cdb.AsSpan(2)), BinaryPrimitives.ReadUInt32BigEndian(cdb.AsSpan(6))),
        0x88 or 0x8A or 0x8E or 0x8F => (BinaryPrimitives.ReadUInt64BigEndian(cdb.AsSpan(2)), BinaryPrimitives.ReadUInt32BigEndian(cdb.AsSpan(10))),
        _ => null,
    };

    private static string Draw(Boundary b, ScsiTask task, int maxTransfer)
    {
        var cdb = task.Cdb;
        Array.Clear(cdb);
        task.Nexus = 1 + b.Next(3);
        ulong lba = Lba(b);
        ulong length = Length(b, maxTransfer);
        uint allocation = Allocation(b);
        byte op = b.Pick<byte>(0x08, 0x0A, 0x28, 0x2A, 0x2E, 0x2F, 0xA8, 0xAA, 0xAE, 0xAF, 0x88, 0x8A, 0x8E, 0x8F, 0x41, 0x93, 0x89, 0x35, 0x91, 0x42, 0x34, 0x90,
            0x12, 0x1A, 0x5A, 0x25, 0x9E, 0xA0, 0x03, 0xA3, 0x5E, 0x5F, 0x00, 0x15, 0x55, 0x16, 0x17, 0x56, 0x57, 0x04);
        if (op is 0x5F or 0x16 or 0x56 && !b.OneIn(10))
        {
            op = 0x28; // reservations now and then: held ones answer most commands of other nexuses with a conflict
        }

        cdb[0] = op;
        bool dataOut = op is 0x0A or 0x2A or 0xAA or 0x8A or 0x2E or 0xAE or 0x8E or 0x41 or 0x93 or 0x89 or 0x42 or 0x5F or 0x15 or 0x55
            || (op is 0x2F or 0xAF or 0x8F && b.OneIn(2));
        switch (op)
        {
            case 0x08 or 0x0A:
                cdb[1] = (byte)((lba >> 16) & 0x1F);
                cdb[2] = (byte)(lba >> 8);
                cdb[3] = (byte)lba;
                cdb[4] = (byte)length;
                break;
            case 0x28 or 0x2A or 0x2E or 0x2F or 0x41 or 0x35 or 0x34:
                BinaryPrimitives.WriteUInt32BigEndian(cdb.AsSpan(2), (uint)lba);
                BinaryPrimitives.WriteUInt16BigEndian(cdb.AsSpan(7), (ushort)length);
                break;
            case 0xA8 or 0xAA or 0xAE or 0xAF:
                BinaryPrimitives.WriteUInt32BigEndian(cdb.AsSpan(2), (uint)lba);
                BinaryPrimitives.WriteUInt32BigEndian(cdb.AsSpan(6), (uint)length);
                break;
            case 0x88 or 0x8A or 0x8E or 0x8F or 0x93 or 0x91 or 0x90:
                BinaryPrimitives.WriteUInt64BigEndian(cdb.AsSpan(2), lba);
                BinaryPrimitives.WriteUInt32BigEndian(cdb.AsSpan(10), (uint)length);
                break;
            case 0x89: // COMPARE AND WRITE: one-byte block count at byte 13
                BinaryPrimitives.WriteUInt64BigEndian(cdb.AsSpan(2), lba);
                cdb[13] = (byte)length;
                break;
            case 0x42: // UNMAP: parameter list length at 7
                BinaryPrimitives.WriteUInt16BigEndian(cdb.AsSpan(7), (ushort)b.Pick(0, 7, 8, 23, 24, 40, 4096, 65535));
                break;
            case 0x12:
                cdb[1] = (byte)(b.OneIn(2) ? 1 : 0); // EVPD
                cdb[2] = b.Pick<byte>(0x00, 0x80, 0x83, 0x86, 0xB0, 0xB1, 0xB2, 0xFF);
                BinaryPrimitives.WriteUInt16BigEndian(cdb.AsSpan(3), (ushort)allocation);
                break;
            case 0x1A:
                cdb[2] = b.Pick<byte>(0x3F, 0x08, 0x0A, 0x1C, 0x48, 0xBF, 0x00);
                cdb[4] = (byte)allocation;
                break;
            case 0x5A:
                cdb[2] = b.Pick<byte>(0x3F, 0x08, 0x0A, 0x1C, 0x48, 0xBF, 0x00);
                BinaryPrimitives.WriteUInt16BigEndian(cdb.AsSpan(7), (ushort)allocation);
                break;
            case 0x9E:
                cdb[1] = b.Pick<byte>(0x10, 0x12, 0x11);
                BinaryPrimitives.WriteUInt64BigEndian(cdb.AsSpan(2), lba);
                BinaryPrimitives.WriteUInt32BigEndian(cdb.AsSpan(10), allocation);
                break;
            case 0xA0 or 0xA3:
                cdb[1] = (byte)(op == 0xA3 ? b.Pick<byte>(0x0C, 0x0A, 0x0D) : 0);
                cdb[2] = (byte)b.Next(4);
                cdb[3] = b.Pick<byte>(0x28, 0x9E, 0x00, 0xFF);
                BinaryPrimitives.WriteUInt32BigEndian(cdb.AsSpan(6), allocation);
                break;
            case 0x5E or 0x5F:
                cdb[1] = (byte)b.Next(8);
                cdb[2] = (byte)b.Next(9);
                BinaryPrimitives.WriteUInt16BigEndian(cdb.AsSpan(7), op == 0x5F ? (ushort)b.Pick(0, 23, 24, 25, 28, 65535) : (ushort)allocation);
                break;
            case 0x03:
                cdb[4] = (byte)allocation;
                break;
            default:
                BinaryPrimitives.WriteUInt16BigEndian(cdb.AsSpan(7), (ushort)allocation);
                break;
        }

        if (op is 0x2A or 0xAA or 0x8A or 0x41 or 0x93 && b.OneIn(3))
        {
            cdb[1] |= b.Pick<byte>(0x08, 0x10, 0x02, 0xE0); // FUA, BYTCHK-ish, UNMAP/ANCHOR, WRPROTECT
        }

        if (b.OneIn(20))
        {
            cdb[b.Next(16)] ^= (byte)(1 << b.Next(8)); // one flipped bit anywhere
        }

        task.DataOut = b.OneIn(12) ? !dataOut : dataOut;
        long natural = op is 0x08 or 0x0A or 0x28 or 0x2A or 0x2E or 0x2F or 0xA8 or 0xAA or 0xAE or 0xAF or 0x88 or 0x8A or 0x8E or 0x8F
            ? (long)Math.Min(length * BlockSize, 1UL << 20)
            : Math.Min(allocation, 1u << 20);
        task.ExpectedLength = b.Next(4) switch
        {
            0 => 0,
            1 => (int)Math.Max(0, natural - b.Pick(1, 511, 512)),
            2 => (int)b.EdgeAtMost(Boundary.Edges(BlockSize, (ulong)maxTransfer), 1 << 20),
            _ => (int)natural,
        };
        return $"CDB {Convert.ToHexString(cdb)} nexus {task.Nexus} out {task.DataOut}";
    }

    private static void FillParameters(Boundary b, ScsiTask task)
    {
        if (task.Buffer == null)
        {
            return;
        }

        var span = task.Buffer.Span[..Math.Min(task.Buffer.Length, 4096)];
        span.Clear();
        if (task.Cdb[0] == 0x42 && span.Length >= 24)
        {
            // UNMAP parameter list: one or more descriptors with edge LBAs and counts.
            int descriptors = b.Pick(0, 1, 2, 200);
            BinaryPrimitives.WriteUInt16BigEndian(span, (ushort)(6 + (descriptors * 16)));
            BinaryPrimitives.WriteUInt16BigEndian(span[2..], (ushort)(descriptors * 16));
            for (int d = 0; d < descriptors && 8 + (d * 16) + 16 <= span.Length; d++)
            {
                BinaryPrimitives.WriteUInt64BigEndian(span[(8 + (d * 16))..], Lba(b));
                BinaryPrimitives.WriteUInt32BigEndian(span[(16 + (d * 16))..], (uint)b.Edge([0, 1, 8, Blocks, Blocks + 1, uint.MaxValue]));
            }
        }
        else if (task.Cdb[0] == 0x5F && span.Length >= 24)
        {
            BinaryPrimitives.WriteUInt64BigEndian(span, b.Pick(0UL, 1UL, ulong.MaxValue));
            BinaryPrimitives.WriteUInt64BigEndian(span[8..], b.Pick(0UL, 1UL, 2UL, ulong.MaxValue));
        }
        else if (task.DataOut)
        {
            b.Rng.NextBytes(span);
        }
    }
}
