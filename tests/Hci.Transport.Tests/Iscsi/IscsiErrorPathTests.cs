using System.Buffers.Binary;
using System.Net.Sockets;
using Hci.Core.Blocks;
using Hci.Core.Devices;
using Hci.Core.Devices.Decorators;
using Hci.Transport.Iscsi;
using Hci.Transport.Scsi;
using static Hci.Testing.Deadline;
using static Hci.Testing.RawInitiator;
using Microsoft.Extensions.Time.Testing;

namespace Hci.Transport.Tests;

/// <summary>
/// What the iSCSI target does when things go wrong, through the raw initiator: device errors become CHECK
/// CONDITION with MEDIUM ERROR, Data-Out out of sequence fails the command (and only it), R2T asks for exactly the
/// rest, ABORT TASK and resets wait for the I/O at the device and drop its answer, a full task set answers TASK SET
/// FULL, the 16 MiB command cap holds, and closing the target or a connection with I/O held at the device drains
/// it with neither a crash nor a hang.
/// </summary>
public sealed class IscsiErrorPathTests
{
    private const string Iqn = "iqn.2026-11.org.hci.test:datapath";
    private const int Block = 4096;

    private static IscsiTarget StartTarget(BlockDevice device, Action<IscsiTargetOptions>? configure = null)
    {
        var options = new IscsiTargetOptions { Portal = "127.0.0.1:0", TargetName = Iqn };
        configure?.Invoke(options);
        var target = new IscsiTarget(options, new Dictionary<int, ScsiDisk> { [1] = new ScsiDisk(device, "errors") });
        target.Start();
        return target;
    }

    [Fact]
    public async Task DeviceErrorsAnswerCheckConditionMediumErrorAndTheSessionGoesOn()
    {
        using var device = new FaultInjectionBlockDevice(new MemoryBlockDevice(16 << 20));
        var readFault = device.Add(new FaultRule(FaultKind.Error, offset: 10L * Block, length: Block, operation: BlockOperation.Read, errno: Errno.EIO));
        var writeFault = device.Add(new FaultRule(FaultKind.Error, offset: 20L * Block, length: Block, operation: BlockOperation.Write, errno: Errno.EIO));
        await using var target = StartTarget(device);
        int port = target.LocalEndPoint.Port;
        await Task.Run(() =>
        {
            using var s = Connect(port, digests: false);
            var client = new RawInitiator(s, digests: false);
            client.Send(Rw(false, 10), null, Block);
            var a = client.ReceiveAnswer();
            Assert.Equal(ScsiStatus.CheckCondition, a.Status);
            Assert.Equal(0x03, a.SenseKey); // MEDIUM ERROR
            Assert.Equal(0x11, a.Asc); // UNRECOVERED READ ERROR

            var payload = new byte[Block];
            payload.AsSpan().Fill(0x99);
            client.Send(Rw(true, 20), payload, 0);
            a = client.ReceiveAnswer();
            Assert.Equal(ScsiStatus.CheckCondition, a.Status);
            Assert.Equal(0x03, a.SenseKey);
            Assert.Equal(0x0C, a.Asc); // WRITE ERROR

            // The blocks beside them, and the session, still work.
            client.Send(Rw(true, 11), payload, 0);
            Assert.Equal(ScsiStatus.Good, client.ReceiveAnswer().Status);
            client.Send(Rw(false, 11), null, Block);
            a = client.ReceiveAnswer();
            Assert.Equal(ScsiStatus.Good, a.Status);
            Assert.Equal(payload, a.Data);
        });

        Assert.Equal(1, readFault.Hits);
        Assert.Equal(1, writeFault.Hits);
    }

    [Fact]
    public async Task DataOutOutOfSequenceFailsOnlyThatCommandAndR2TAsksForExactlyTheRest()
    {
        using var device = new MemoryBlockDevice(16 << 20);
        await using var target = StartTarget(device);
        int port = target.LocalEndPoint.Port;
        await Task.Run(() =>
        {
            using var s = Connect(port, digests: false, extraKeys: "MaxBurstLength=65536\0");
            var client = new RawInitiator(s, digests: false);
            var data = new byte[2 * Block];
            new Random(5).NextBytes(data);

            // Unsolicited Data-Out (InitialR2T=No) with DataSN 1 first: a repeat or gap in the sequence cannot be
            // repaired at ErrorRecoveryLevel 0, so the command ends with CHECK CONDITION once its data is in.
            uint itt = client.SendCommand(Write10(30, 2), null, 2 * Block, write: true, final: false);
            client.SendDataOut(itt, 0xFFFFFFFF, 1, 0, data[..Block], final: false);
            client.SendDataOut(itt, 0xFFFFFFFF, 0, Block, data[Block..], final: true);
            var a = client.ReceiveAnswer();
            Assert.Equal(itt, a.Itt);
            Assert.Equal(ScsiStatus.CheckCondition, a.Status);
            Assert.Equal(0x0B, a.SenseKey); // ABORTED COMMAND
            Assert.Equal(0x4B, a.Asc); // DATA PHASE ERROR

            // The right DataSNs with the offsets out of order: also a sequence error.
            itt = client.SendCommand(Write10(32, 2), null, 2 * Block, write: true, final: false);
            client.SendDataOut(itt, 0xFFFFFFFF, 0, Block, data[Block..], final: false);
            client.SendDataOut(itt, 0xFFFFFFFF, 1, 0, data[..Block], final: true);
            a = client.ReceiveAnswer();
            Assert.Equal(ScsiStatus.CheckCondition, a.Status);
            Assert.Equal(0x4B, a.Asc);

            // Neither write reached the medium.
            client.Send(Read10(30, 4), null, 4 * Block);
            a = client.ReceiveAnswer();
            Assert.Equal(ScsiStatus.Good, a.Status);
            Assert.Equal(new byte[4 * Block], a.Data);

            // A write with no unsolicited data: the target asks for all of it, in bursts of MaxBurstLength, each R2T
            // numbered and placed right after the last; the data lands where the R2Ts said.
            var big = new byte[160 * 1024];
            new Random(6).NextBytes(big);
            itt = client.SendCommand(Write10(40, big.Length / Block), null, big.Length, write: true, final: true);
            int received = 0;
            for (uint r2tSn = 0; received < big.Length; r2tSn++)
            {
                var (h, _) = client.Next();
                Assert.Equal(0x31, h[0] & 0x3F); // R2T
                Assert.Equal(itt, BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(16)));
                Assert.Equal(r2tSn, BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(36)));
                uint offset = BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(40));
                uint length = BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(44));
                Assert.Equal((uint)received, offset);
                Assert.Equal((uint)Math.Min(65536, big.Length - received), length);
                uint ttt = BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(20));
                Assert.NotEqual(0xFFFFFFFFu, ttt);
                for (uint sent = 0, sn = 0; sent < length; sent += 16384, sn++)
                {
                    uint piece = Math.Min(16384, length - sent);
                    client.SendDataOut(itt, ttt, sn, offset + sent, big[(int)(offset + sent)..(int)(offset + sent + piece)], final: sent + piece == length);
                }

                received += (int)length;
            }

            a = client.ReceiveAnswer();
            Assert.Equal(itt, a.Itt);
            Assert.Equal(ScsiStatus.Good, a.Status);
            client.Send(Read10(40, big.Length / Block), null, big.Length);
            a = client.ReceiveAnswer();
            Assert.True(big.AsSpan().SequenceEqual(a.Data), "the data sent against the R2Ts did not land where they asked");

            // Data-Out for a task that takes none is rejected (reason 09h, invalid PDU field); the session goes on.
            client.SendDataOut(0x7777, 0xFFFFFFFF, 0, 0, data[..Block], final: true);
            var (reject, _) = client.Next();
            Assert.Equal(0x3F, reject[0] & 0x3F);
            Assert.Equal(0x09, reject[2]);
            client.Send([0x00], null, 0);
            Assert.Equal(ScsiStatus.Good, client.ReceiveAnswer().Status);
        });
    }

    [Fact]
    public async Task AbortTaskWaitsForTheIoAtTheDeviceAndDropsItsAnswerAndResetsAreAnswered()
    {
        var clock = new FakeTimeProvider();
        using var device = new DelayBlockDevice(new MemoryBlockDevice(16 << 20), TimeSpan.FromHours(1), TimeSpan.FromHours(1), clock);
        await using var target = StartTarget(device);
        int port = target.LocalEndPoint.Port;
        await Task.Run(() =>
        {
            using var s = Connect(port, digests: false);
            var client = new RawInitiator(s, digests: false);

            // A READ held at the device (an hour on a clock that only the test moves), then ABORT TASK for it.
            uint read = client.Send(Rw(false, 3), null, Block);
            uint abort = client.SendTaskManagement(1, read);

            // The TMF is not answered while the read is at the device: a TEST UNIT READY sent after it is answered
            // first (PDUs are taken in order, so an early TMF response would come before it).
            uint tur = client.Send([0x00], null, 0);
            var a = client.ReceiveAnswer();
            Assert.Equal(tur, a.Itt);
            Assert.Equal(ScsiStatus.Good, a.Status);

            // The device finishes: the TMF is answered "function complete", and the read's own answer never comes
            // (the next answer is for the command sent after it).
            clock.Advance(TimeSpan.FromHours(2));
            tur = client.Send([0x00], null, 0); // wakes the connection, which finds the read done
            var answers = Collect(client, read, abort, tur);
            Assert.Equal((0x22, (byte)0), answers[abort]); // function complete
            Assert.Equal((0x21, ScsiStatus.Good), answers[tur]);

            // ABORT TASK for a tag that is not in flight: "task does not exist".
            uint none = client.SendTaskManagement(1, 0x5555);
            Assert.Equal((none, (byte)1), Tmf(client));

            // LOGICAL UNIT RESET: answered, and the next command sees the reset as a unit attention (29h), once.
            uint reset = client.SendTaskManagement(5);
            Assert.Equal((reset, (byte)0), Tmf(client));
            client.Send([0x00], null, 0);
            a = client.ReceiveAnswer();
            Assert.Equal(ScsiStatus.CheckCondition, a.Status);
            Assert.Equal(0x06, a.SenseKey);
            Assert.Equal(0x29, a.Asc);
            client.Send([0x00], null, 0);
            Assert.Equal(ScsiStatus.Good, client.ReceiveAnswer().Status);

            // A reset of a LUN that does not exist, a cold reset (not at ErrorRecoveryLevel 0) and an unknown function.
            uint noLun = client.SendTaskManagement(5, lun: 9);
            Assert.Equal((noLun, (byte)2), Tmf(client));
            uint cold = client.SendTaskManagement(7);
            Assert.Equal((cold, (byte)5), Tmf(client));
            uint unknown = client.SendTaskManagement(0x33);
            Assert.Equal((unknown, (byte)255), Tmf(client));

            // TARGET WARM RESET with a write held at the device: answered once it is done, the write's answer dropped.
            var payload = new byte[Block];
            payload.AsSpan().Fill(0x42);
            uint held = client.Send(Rw(true, 5), payload, 0);
            uint warm = client.SendTaskManagement(6);
            tur = client.Send([0x00], null, 0);
            var first = Collect(client, held, tur);
            Assert.Equal((0x21, ScsiStatus.CheckCondition), first[tur]); // the reset's unit attention
            clock.Advance(TimeSpan.FromHours(2));
            tur = client.Send([0x00], null, 0);

            // On a loaded machine the reset can come before the write reached the device (nothing to wait for: it is
            // answered at once and was read with the unit attention above); either way the write's answer never comes.
            answers = first.ContainsKey(warm) ? Collect(client, held, tur) : Collect(client, held, warm, tur);
            Assert.Equal((0x22, (byte)0), first.TryGetValue(warm, out var early) ? early : answers[warm]);
        });
    }

    [Fact]
    public async Task AFullTaskSetAnswersTaskSetFullAndTheSessionRecovers()
    {
        // A command window of 1 gives the connection 17 task slots. Writes that wait for their data (no
        // unsolicited data: the target sends an R2T and keeps the slot) fill them; the next command is answered
        // TASK SET FULL, and once the writes get their data new commands run again.
        using var device = new MemoryBlockDevice(16 << 20);
        await using var target = StartTarget(device, o => o.CommandWindow = 1);
        int port = target.LocalEndPoint.Port;
        await Task.Run(() =>
        {
            using var s = Connect(port, digests: false);
            var client = new RawInitiator(s, digests: false);
            var waiting = new List<(uint Itt, uint Ttt)>();
            for (int i = 0; i < 17; i++)
            {
                uint itt = client.SendCommand(Write10((uint)(100 + i), 1), null, Block, write: true, final: true);
                var (h, _) = client.Next();
                Assert.True((h[0] & 0x3F) == 0x31, $"write {i}: expected an R2T, got opcode 0x{h[0] & 0x3F:x2} status {h[3]}");
                waiting.Add((itt, BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(20))));
            }

            client.Send(Rw(false, 0), null, Block);
            var a = client.ReceiveAnswer();
            Assert.Equal(ScsiStatus.TaskSetFull, a.Status);

            var payload = new byte[Block];
            foreach (var (itt, ttt) in waiting)
            {
                payload.AsSpan().Fill((byte)itt);
                client.SendDataOut(itt, ttt, 0, 0, payload, final: true);
                a = client.ReceiveAnswer();
                Assert.Equal(itt, a.Itt);
                Assert.Equal(ScsiStatus.Good, a.Status);
            }

            client.Send(Rw(false, 100), null, Block);
            a = client.ReceiveAnswer();
            Assert.Equal(ScsiStatus.Good, a.Status);
            Assert.True(a.Data.AsSpan().IndexOfAnyExcept((byte)waiting[0].Itt) < 0);
        });
    }

    [Fact]
    public async Task OneCommandMovesAtMost16MiB()
    {
        using var device = new MemoryBlockDevice(64 << 20);
        await using var target = StartTarget(device);
        int port = target.LocalEndPoint.Port;
        await Task.Run(() =>
        {
            using var s = Connect(port, digests: false);
            var client = new RawInitiator(s, digests: false);

            // Exactly 16 MiB in one READ(16): served.
            const int Cap = 16 << 20;
            client.Send(Read16(0, Cap / Block), null, Cap);
            var a = client.ReceiveAnswer();
            Assert.Equal(ScsiStatus.Good, a.Status);
            Assert.Equal(Cap, a.Data.Length);

            // One block more: refused before any data moves, ILLEGAL REQUEST.
            client.Send(Read16(0, (Cap / Block) + 1), null, Cap + Block);
            a = client.ReceiveAnswer();
            Assert.Equal(ScsiStatus.CheckCondition, a.Status);
            Assert.Equal(0x05, a.SenseKey);
            Assert.Empty(a.Data);

            // An expected length far past the cap is refused by the transport without taking a buffer for it.
            client.SendCommand(Read16(0, 1), null, 64 << 20, write: false);
            a = client.ReceiveAnswer();
            Assert.Equal(ScsiStatus.CheckCondition, a.Status);
            Assert.Equal(0x05, a.SenseKey);

            client.Send([0x00], null, 0);
            Assert.Equal(ScsiStatus.Good, client.ReceiveAnswer().Status);
        });
    }

    [Fact]
    public async Task ClosingTheTargetWithWritesHeldAtTheDeviceDrainsThemWithoutACrashOrAHang()
    {
        var clock = new FakeTimeProvider();
        using var memory = new MemoryBlockDevice(16 << 20);
        using var device = new DelayBlockDevice(memory, TimeSpan.FromHours(1), TimeSpan.FromHours(1), clock, ownsInner: false);
        var target = StartTarget(device);
        int port = target.LocalEndPoint.Port;
        using var s = Connect(port, digests: false);
        var client = new RawInitiator(s, digests: false);
        var payload = new byte[Block];
        for (uint i = 0; i < 8; i++)
        {
            payload.AsSpan().Fill((byte)(0x10 + i));
            client.Send(Rw(true, 200 + i), payload, 0);
        }

        // Everything sent was taken: a TEST UNIT READY behind the writes is answered while they are held.
        client.Send([0x00], null, 0);
        Assert.Equal(ScsiStatus.Good, client.ReceiveAnswer().Status);

        // A second initiator closes its connection with a write held at the device.
        using (var other = Connect(port, digests: false))
        {
            var second = new RawInitiator(other, digests: false);
            payload.AsSpan().Fill(0x77);
            second.Send(Rw(true, 300), payload, 0);
            second.Send([0x00], null, 0);
            Assert.Equal(ScsiStatus.Good, second.ReceiveAnswer().Status);
        }

        // Close the target while the I/O is at the device; it may finish only once the device has answered (the
        // device may still write into the requests' buffers), so it must still be waiting 2 s later, while the
        // clock that holds the I/O stands still.
        var closing = Task.Run(async () => await target.DisposeAsync());
        var early = await Record.ExceptionAsync(() => closing.WaitAsync(TimeSpan.FromSeconds(2)));
        Assert.True(early is TimeoutException, "the target closed while its I/O was still at the device");
        clock.Advance(TimeSpan.FromHours(2));
        try
        {
            await closing.WaitAsync(TimeSpan.FromSeconds(30));
        }
        catch (TimeoutException)
        {
            Assert.Fail("closing the target with I/O at the device did not finish within 30 s of the device answering");
        }

        // The connection was closed (not left half open), and every write that reached the device is whole there.
        s.ReceiveTimeout = 10_000;
        var end = Record.Exception(new Action(() =>
        {
            while (true)
            {
                client.Next();
            }
        }));
        Assert.True(end is EndOfStreamException || end is SocketException { SocketErrorCode: SocketError.ConnectionReset }, $"the connection did not end with the target: {end}");

        var check = new byte[Block];
        for (uint i = 0; i < 8; i++)
        {
            await memory.ReadAsync((200 + i) * (long)Block, check);
            Assert.True(check.AsSpan().IndexOfAnyExcept((byte)(0x10 + i)) < 0, $"write {i} is not whole on the device");
        }

        await memory.ReadAsync(300L * Block, check);
        Assert.True(check.AsSpan().IndexOfAnyExcept((byte)0x77) < 0, "the closed connection's write is not whole on the device");
    }

    /// <summary>
    /// Reads PDUs until every tag in <paramref name="expected"/> has its answer (opcode, and status or TMF
    /// response), in whatever order they come; an answer for <paramref name="dropped"/> fails the test.
    /// </summary>
    private static Dictionary<uint, (int Opcode, byte Code)> Collect(RawInitiator client, uint dropped, params uint[] expected)
    {
        var seen = new Dictionary<uint, (int, byte)>();
        while (!expected.All(seen.ContainsKey))
        {
            var (h, _) = client.Next();
            int op = h[0] & 0x3F;
            uint itt = BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(16));
            Assert.True(itt != dropped, $"the aborted task {dropped:x} was answered (opcode 0x{op:x2})");
            if (op == 0x25 && (h[1] & 0x01) == 0)
            {
                continue;
            }

            Assert.True(op is 0x21 or 0x22 or 0x25, $"unexpected opcode 0x{op:x2}");
            seen[itt] = (op == 0x25 ? 0x21 : op, op == 0x22 ? h[2] : h[3]);
        }

        return seen;
    }

    private static (uint Itt, byte Response) Tmf(RawInitiator client)
    {
        var (h, _) = client.Next();
        Assert.True((h[0] & 0x3F) == 0x22, $"expected a TMF response, got opcode 0x{h[0] & 0x3F:x2}");
        return (BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(16)), h[2]);
    }

    private static byte[] Write10(uint lba, int blocks) => Cdb10(0x2A, lba, blocks);

    private static byte[] Read10(uint lba, int blocks) => Cdb10(0x28, lba, blocks);

    private static byte[] Cdb10(byte op, uint lba, int blocks)
    {
        var cdb = new byte[16];
        cdb[0] = op;
        BinaryPrimitives.WriteUInt32BigEndian(cdb.AsSpan(2), lba);
        BinaryPrimitives.WriteUInt16BigEndian(cdb.AsSpan(7), (ushort)blocks);
        return cdb;
    }

    private static byte[] Read16(ulong lba, int blocks)
    {
        var cdb = new byte[16];
        cdb[0] = 0x88;
        BinaryPrimitives.WriteUInt64BigEndian(cdb.AsSpan(2), lba);
        BinaryPrimitives.WriteUInt32BigEndian(cdb.AsSpan(10), (uint)blocks);
        return cdb;
    }
}
