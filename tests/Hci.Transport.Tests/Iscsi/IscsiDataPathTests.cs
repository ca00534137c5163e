using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;
using Hci.Core.Devices;
using Hci.Transport.Iscsi;
using Hci.Transport.Scsi;
using static Hci.Testing.Deadline;
using static Hci.Testing.RawInitiator;

namespace Hci.Transport.Tests;

/// <summary>
/// The full feature phase's data path, driven by a raw initiator written here: pipelined writes and reads at
/// depth allocate nothing on the connection's thread once warm and read back what was written; negotiated
/// digests cover every PDU both ways and a bad header digest drops the connection.
/// </summary>
public sealed class IscsiDataPathTests
{
    private const string Iqn = "iqn.2026-11.org.hci.test:datapath";
    private const int Block = 4096;

    [Fact]
    public async Task PipelinedWritesAndReadsAllocateNothingOnceWarmAndReadBackWhatWasWritten()
    {
        using var device = new MemoryBlockDevice(16 << 20);
        var target = new IscsiTarget(new IscsiTargetOptions { Portal = "127.0.0.1:0", TargetName = Iqn }, new Dictionary<int, ScsiDisk> { [1] = new ScsiDisk(device, "dp") });
        target.Start();
        int port = target.LocalEndPoint.Port;
        const int Rounds = 1500;
        const int Depth = 16;
        await Task.Run(() =>
        {
            using var s = Connect(port, digests: false);
            var client = new RawInitiator(s, digests: false);

            // What the initiator wrote, per LBA, and which command each task tag carried: a read must return the
            // last data written to its own LBA, and every answer must name a task we have in flight, once.
            var written = new Dictionary<uint, byte[]>();
            var inFlight = new Dictionary<uint, (bool Write, uint Lba)>();
            for (int round = 0; round < Rounds; round++)
            {
                // Depth commands in flight: writes of blocks stamped with their LBA and round, then reads of them.
                bool write = round % 2 == 0;
                for (int i = 0; i < Depth; i++)
                {
                    uint lba = (uint)((round / 2 * Depth) + i) % 4096;
                    byte[]? payload = null;
                    if (write)
                    {
                        payload = new byte[Block];
                        payload.AsSpan().Fill((byte)(round + (i * 7)));
                        BinaryPrimitives.WriteUInt32BigEndian(payload, lba);
                        BinaryPrimitives.WriteInt32BigEndian(payload.AsSpan(4), round);
                        written[lba] = payload;
                    }

                    uint itt = client.Send(Rw(write, lba), payload, write ? 0 : Block);
                    inFlight.Add(itt, (write, lba));
                }

                for (int i = 0; i < Depth; i++)
                {
                    RawInitiator.Answer answer;
                    try
                    {
                        answer = client.ReceiveAnswer();
                    }
                    catch (SocketException e)
                    {
                        throw new InvalidOperationException($"no answer in round {round} after {i} answers", e);
                    }

                    Assert.True(inFlight.Remove(answer.Itt, out var command), $"round {round}: an answer for task tag {answer.Itt}, which is not in flight");
                    Assert.Equal(ScsiStatus.Good, answer.Status);
                    if (!command.Write)
                    {
                        Assert.Equal(Block, answer.Data.Length);
                        byte[] expected = written[command.Lba];
                        if (!answer.Data.AsSpan().SequenceEqual(expected))
                        {
                            Assert.Fail($"round {round}: LBA {command.Lba} read back block {BinaryPrimitives.ReadUInt32BigEndian(answer.Data)} of round {BinaryPrimitives.ReadInt32BigEndian(answer.Data.AsSpan(4))}, last written in round {BinaryPrimitives.ReadInt32BigEndian(expected.AsSpan(4))}");
                        }
                    }
                }

                Assert.Empty(inFlight);
            }

            client.Logout();
        });

        await target.DisposeAsync();
        var (commands, allocated) = target.SteadyState;
        Assert.True(commands >= (Rounds * Depth) - 1024, $"only {commands} commands counted after warm-up");
        Assert.Equal(0, allocated);
    }

    [Fact]
    public async Task DigestsCoverEveryPduBothWaysAndABadHeaderDigestDropsTheConnection()
    {
        using var device = new MemoryBlockDevice(16 << 20);
        await using var target = new IscsiTarget(new IscsiTargetOptions { Portal = "127.0.0.1:0", TargetName = Iqn }, new Dictionary<int, ScsiDisk> { [1] = new ScsiDisk(device, "dp") });
        target.Start();
        int port = target.LocalEndPoint.Port;
        await Task.Run(() =>
        {
            using var s = Connect(port, digests: true);
            var client = new RawInitiator(s, digests: true);
            var payload = new byte[Block];
            Random.Shared.NextBytes(payload);
            client.Send(Rw(true, 7), payload, 0);
            Assert.Equal(ScsiStatus.Good, client.Receive().Status); // the reader checks both digests of each answer
            client.Send(Rw(false, 7), null, Block);
            var (status, data) = client.Receive();
            Assert.Equal(ScsiStatus.Good, status);
            Assert.Equal(payload, data);

            client.CorruptNextHeaderDigest = true;
            client.Send(Rw(false, 7), null, Block);
            Assert.Throws<EndOfStreamException>(() => client.Receive());
        });

        using var again = Connect(port, digests: true); // the target goes on serving
        var second = new RawInitiator(again, digests: true);
        second.Send(Rw(false, 7), null, Block);
        Assert.Equal(ScsiStatus.Good, second.Receive().Status);
    }

    [Fact]
    public async Task EachSessionsIoReachesTheSchedulerAsClassVmWithItsOwnTenant()
    {
        var seen = new System.Collections.Concurrent.ConcurrentBag<(string Class, int Tenant)>();
        using var listener = new System.Diagnostics.Metrics.MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == Hci.Scheduling.SchedulingMetrics.MeterName)
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
        {
            // Only what this test's connections dispatch: their data-path threads are named so.
            if (instrument.Name.EndsWith("ios", StringComparison.Ordinal) && Thread.CurrentThread.Name?.StartsWith("iscsi-c", StringComparison.Ordinal) == true)
            {
                string cls = "";
                int tenant = -1;
                foreach (var t in tags)
                {
                    if (t.Key == "hci.io.class")
                    {
                        cls = (string)t.Value!;
                    }
                    else if (t.Key == "hci.tenant")
                    {
                        tenant = Convert.ToInt32(t.Value, System.Globalization.CultureInfo.InvariantCulture);
                    }
                }

                seen.Add((cls, tenant));
            }
        });
        listener.Start();

        using var device = new Hci.Scheduling.ScheduledBlockDevice(new MemoryBlockDevice(16 << 20), new Hci.Scheduling.SchedulerOptions { Kind = Hci.Scheduling.SchedulerKind.Fifo });
        await using var target = new IscsiTarget(new IscsiTargetOptions { Portal = "127.0.0.1:0", TargetName = Iqn }, new Dictionary<int, ScsiDisk> { [1] = new ScsiDisk(device, "dp") });
        target.Start();
        int port = target.LocalEndPoint.Port;
        await Task.Run(() =>
        {
            using var a = Connect(port, digests: false);
            using var b = Connect(port, digests: false);
            var first = new RawInitiator(a, digests: false);
            var second = new RawInitiator(b, digests: false);
            var payload = new byte[Block];
            for (int i = 0; i < 5; i++)
            {
                first.Send(Rw(true, (uint)i), payload, 0);
                Assert.Equal(ScsiStatus.Good, first.Receive().Status);
            }

            for (int i = 0; i < 3; i++)
            {
                second.Send(Rw(false, (uint)i), null, Block);
                Assert.Equal(ScsiStatus.Good, second.Receive().Status);
            }
        });

        var byTenant = seen.GroupBy(s => s.Tenant).ToDictionary(g => g.Key, g => g.ToList());
        Assert.All(seen, s => Assert.Equal("vm", s.Class));
        Assert.Equal(2, byTenant.Count);
        Assert.Equal([3, 5], byTenant.Values.Select(v => v.Count).Order());
    }

    [Fact]
    public async Task AnIpv6PortalServesSeveralLunsEachWithItsOwnBlocks()
    {
        using var zero = new MemoryBlockDevice(8 << 20);
        using var five = new MemoryBlockDevice(8 << 20);
        await using var target = new IscsiTarget(
            new IscsiTargetOptions { Portal = "[::1]:0", TargetName = Iqn },
            new Dictionary<int, ScsiDisk> { [0] = new ScsiDisk(zero, "lun0"), [5] = new ScsiDisk(five, "lun5") });
        target.Start();
        int port = target.LocalEndPoint.Port;
        await Task.Run(() =>
        {
            using var s = Connect(port, digests: false, host: "::1");
            var client = new RawInitiator(s, digests: false);
            var cdb = new byte[16];
            cdb[0] = 0xA0; // REPORT LUNS
            cdb[9] = 64;
            client.Send(cdb, null, 64, lun: 0);
            var (status, list) = client.Receive();
            Assert.Equal(ScsiStatus.Good, status);
            Assert.Equal(16u, BinaryPrimitives.ReadUInt32BigEndian(list));
            Assert.Equal(0UL, BinaryPrimitives.ReadUInt64BigEndian(list.AsSpan(8)));
            Assert.Equal(5UL << 48, BinaryPrimitives.ReadUInt64BigEndian(list.AsSpan(16)));

            var payload = new byte[Block];
            payload.AsSpan().Fill(0x5A);
            client.Send(Rw(true, 3), payload, 0, lun: 5);
            Assert.Equal(ScsiStatus.Good, client.Receive().Status);
            client.Send(Rw(false, 3), null, Block, lun: 5);
            Assert.Equal(payload, client.Receive().Data);
            client.Send(Rw(false, 3), null, Block, lun: 0);
            Assert.Equal(new byte[Block], client.Receive().Data);
            client.Send(Rw(false, 3), null, Block, lun: 3);
            Assert.Equal(ScsiStatus.CheckCondition, client.Receive().Status); // no LUN 3
        });
    }

    [Fact]
    public async Task ALargeReadInSmallSegmentsToASlowReaderStaysIntactWhileLaterCommandsRun()
    {
        // 1 MiB read back in 512-byte Data-In PDUs (the initiator's limit): more PDUs than one send holds, to a
        // reader that waits before it reads, while more reads arrive. Every byte must be what the medium holds.
        using var device = new MemoryBlockDevice(16 << 20);
        var medium = new byte[16 << 20];
        new Random(3).NextBytes(medium);
        for (int at = 0; at < medium.Length; at += 1 << 20)
        {
            await device.WriteAsync(at, medium.AsMemory(at, 1 << 20));
        }
        await using var target = new IscsiTarget(new IscsiTargetOptions { Portal = "127.0.0.1:0", TargetName = Iqn }, new Dictionary<int, ScsiDisk> { [1] = new ScsiDisk(device, "dp") });
        target.Start();
        int port = target.LocalEndPoint.Port;
        await Task.Run(() =>
        {
            using var s = Connect(port, digests: false, maxRecv: 512);
            s.ReceiveBufferSize = 65536;
            var client = new RawInitiator(s, digests: false);
            var big = new byte[16];
            big[0] = 0x28;
            BinaryPrimitives.WriteUInt32BigEndian(big.AsSpan(2), 16); // LBA 16
            BinaryPrimitives.WriteUInt16BigEndian(big.AsSpan(7), 256); // 1 MiB
            client.Send(big, null, 1 << 20);

            // The target has filled the socket and holds the rest of its answer as pending output.
            WaitUntil(() => s.Available >= 32 * 1024, "the large read's first 32 KiB");
            for (uint i = 0; i < 8; i++)
            {
                client.Send(Rw(false, 1000 + i), null, Block);
            }

            // The later reads have reached the target (nothing left unacknowledged in our send queue), so it
            // takes them while its output is still pending.
            WaitUntil(() => UnsentBytes(s) == 0, "the later reads to reach the target");
            var (status, data) = client.Receive();
            Assert.Equal(ScsiStatus.Good, status);
            Assert.True(medium.AsSpan(16 * Block, 1 << 20).SequenceEqual(data), "the large read came back changed");
            for (uint i = 0; i < 8; i++)
            {
                (status, data) = client.Receive();
                Assert.Equal(ScsiStatus.Good, status);
                Assert.True(medium.AsSpan((int)(1000 + i) * Block, Block).SequenceEqual(data));
            }
        });
    }

    [Fact]
    public async Task AnIdleInitiatorIsPingedAndDroppedOnlyWhenItStopsAnswering()
    {
        using var device = new MemoryBlockDevice(8 << 20);
        await using var target = new IscsiTarget(
            new IscsiTargetOptions { Portal = "127.0.0.1:0", TargetName = Iqn, NopInInterval = TimeSpan.FromMilliseconds(200), NopInTimeout = TimeSpan.FromMilliseconds(600) },
            new Dictionary<int, ScsiDisk> { [1] = new ScsiDisk(device, "dp") });
        target.Start();
        int port = target.LocalEndPoint.Port;
        await Task.Run(() =>
        {
            using var s = Connect(port, digests: false);
            var client = new RawInitiator(s, digests: false);
            for (int ping = 0; ping < 3; ping++)
            {
                var (h, _) = client.Next(); // idle: the target asks whether we are there
                Assert.Equal(0x20, h[0] & 0x3F);
                Assert.Equal(0xFFFFFFFFu, BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(16)));
                Assert.NotEqual(0xFFFFFFFFu, BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(20)));
                client.AnswerPing(h);
            }

            client.Send(Rw(false, 0), null, Block); // still served after answering
            Assert.Equal(ScsiStatus.Good, client.Receive().Status);

            // Now silent: one more ping, then the target gives up on the connection.
            Assert.Equal(0x20, client.Next().Header[0] & 0x3F);
            var watch = System.Diagnostics.Stopwatch.StartNew();
            Action readUntilClosed = () =>
            {
                while (true)
                {
                    client.Next(); // a ping may repeat; the end comes when the target closes
                }
            };
            Assert.Throws<EndOfStreamException>(readUntilClosed);
            Assert.True(watch.Elapsed < TimeSpan.FromSeconds(5), $"dropped after {watch.Elapsed}");
        });
    }

    [Fact]
    public async Task CompareAndWriteOverIscsiWaitsForAFastPathWriteOfAnotherSessionAtTheDevice()
    {
        // Session 1's WRITE of 'W' takes the fast path and stalls at the device; session 2's COMPARE AND WRITE
        // expects the old 'O'. It must see the write (a miscompare), not compare with 'O' and then lose the write.
        using var memory = new MemoryBlockDevice(16 << 20);
        using var stall = new StallWritesBlockDevice(memory);
        var disk = new ScsiDisk(stall, "caw");
        var target = new IscsiTarget(new IscsiTargetOptions { Portal = "127.0.0.1:0", TargetName = Iqn }, new Dictionary<int, ScsiDisk> { [1] = disk });
        target.Start();
        int port = target.LocalEndPoint.Port;
        try
        {
            await Task.Run(() =>
            {
                using var s1 = Connect(port, digests: false);
                using var s2 = Connect(port, digests: false);
                var one = new RawInitiator(s1, digests: false);
                var two = new RawInitiator(s2, digests: false);
                one.Send(Rw(true, 5), Enumerable.Repeat((byte)'O', Block).ToArray(), 0);
                Assert.Equal(ScsiStatus.Good, one.Receive().Status);
                stall.Stall();
                try
                {
                    one.Send(Rw(true, 5), Enumerable.Repeat((byte)'W', Block).ToArray(), 0);
                    stall.WaitHeld(1);
                    var caw = new byte[16];
                    caw[0] = 0x89;
                    BinaryPrimitives.WriteUInt64BigEndian(caw.AsSpan(2), 5);
                    caw[13] = 1;
                    var data = Enumerable.Repeat((byte)'O', 2 * Block).ToArray();
                    data.AsSpan(Block).Fill((byte)'N');
                    two.Send(caw, data, 0);

                    // Released once the COMPARE AND WRITE has either compared and reached the device with its write,
                    // or is waiting for the write in flight.
                    WaitUntil(() => stall.Held >= 2 || disk.AtomicWaits > 0, "the COMPARE AND WRITE to compare or to wait");
                }
                finally
                {
                    stall.Release();
                }

                Assert.Equal(ScsiStatus.Good, one.Receive().Status);
                var (h, sense) = two.Next();
                Assert.Equal((0x21, (int)ScsiStatus.CheckCondition), (h[0] & 0x3F, (int)h[3]));
                Assert.Equal(((int)SenseKey.Miscompare, 0x1D), (sense[2 + 2] & 0x0F, (int)sense[2 + 12])); // after the sense length
                one.Send(Rw(false, 5), null, Block);
                var (status, read) = one.Receive();
                Assert.Equal(ScsiStatus.Good, status);
                Assert.Equal(-1, read.AsSpan().IndexOfAnyExcept((byte)'W'));
                one.Logout();
                two.Logout();
            });
        }
        finally
        {
            await target.DisposeAsync();
        }
    }

    [Fact]
    public async Task DataBuffersAreBoundedTargetWideAndACommandOverTheBudgetGetsTaskSetFull()
    {
        // Each session holds a 16 MiB read buffer (kept for its next command); with a 32 MiB target-wide budget the
        // third session's 16 MiB read must be answered TASK SET FULL instead of allocating past the budget.
        using var device = new MemoryBlockDevice(16 << 20);
        var options = new IscsiTargetOptions { Portal = "127.0.0.1:0", TargetName = Iqn, MaxBufferedBytes = 32 << 20 };
        var target = new IscsiTarget(options, new Dictionary<int, ScsiDisk> { [1] = new ScsiDisk(device, "budget") });
        target.Start();
        int port = target.LocalEndPoint.Port;
        try
        {
            await Task.Run(() =>
            {
                var read = new byte[16];
                read[0] = 0x28;
                BinaryPrimitives.WriteUInt16BigEndian(read.AsSpan(7), (ushort)((16 << 20) / Block));
                var sockets = new List<Socket>();
                var statuses = new List<byte>();
                try
                {
                    for (int i = 0; i < 3; i++)
                    {
                        var s = Connect(port, digests: false);
                        sockets.Add(s);
                        var client = new RawInitiator(s, digests: false);
                        client.Send(read, null, 16 << 20);
                        statuses.Add(client.Receive().Status);
                    }
                }
                finally
                {
                    sockets.ForEach(s => s.Dispose());
                }

                Assert.Equal([ScsiStatus.Good, ScsiStatus.Good, ScsiStatus.TaskSetFull], statuses);
                Assert.True(target.BufferedBytes <= 32 << 20, $"{target.BufferedBytes} bytes buffered");
            });
        }
        finally
        {
            await target.DisposeAsync();
        }

        Assert.Equal(0, target.BufferedBytes);
        Assert.Throws<ArgumentException>(() => new IscsiTargetOptions { TargetName = Iqn, MaxBufferedBytes = 1 << 20 }.Validate());
    }

    [Fact]
    public async Task APersistentReservationStaysWithTheInitiatorPortWhenItLogsInAgain()
    {
        // The I_T nexus is the initiator port (name + ISID): a port that registered and reserved, logged out and
        // logged in again is still the holder; another port of the same initiator is not.
        using var device = new MemoryBlockDevice(16 << 20);
        var target = new IscsiTarget(new IscsiTargetOptions { Portal = "127.0.0.1:0", TargetName = Iqn }, new Dictionary<int, ScsiDisk> { [1] = new ScsiDisk(device, "pr") });
        target.Start();
        int port = target.LocalEndPoint.Port;
        try
        {
            await Task.Run(() =>
            {
                var block = new byte[Block];
                using (var s = Connect(port, digests: false, isid: 0x4242))
                {
                    var c = new RawInitiator(s, digests: false);
                    c.Send(Prout(0, 0), ProutList(0, 0xABCD), 0); // REGISTER
                    Assert.Equal(ScsiStatus.Good, c.Receive().Status);
                    c.Send(Prout(1, 1), ProutList(0xABCD, 0), 0); // RESERVE, Write Exclusive
                    Assert.Equal(ScsiStatus.Good, c.Receive().Status);
                    c.Logout();
                }

                using (var s = Connect(port, digests: false, isid: 0x4242))
                {
                    var c = new RawInitiator(s, digests: false);
                    c.Send(Rw(true, 1), block, 0);
                    Assert.Equal(ScsiStatus.Good, c.Receive().Status);
                    c.Logout();
                }

                using (var s = Connect(port, digests: false, isid: 0x4343))
                {
                    var c = new RawInitiator(s, digests: false);
                    c.Send(Rw(true, 1), block, 0);
                    Assert.Equal(ScsiStatus.ReservationConflict, c.Receive().Status);
                    c.Logout();
                }
            });
        }
        finally
        {
            await target.DisposeAsync();
        }
    }

    [Fact]
    public async Task ALoginWithTheNameAndIsidOfAnOpenSessionReinstatesItClosingTheOldOneFirst()
    {
        using var device = new MemoryBlockDevice(16 << 20);
        var target = new IscsiTarget(new IscsiTargetOptions { Portal = "127.0.0.1:0", TargetName = Iqn }, new Dictionary<int, ScsiDisk> { [1] = new ScsiDisk(device, "reinstate") });
        target.Start();
        int port = target.LocalEndPoint.Port;
        try
        {
            await Task.Run(() =>
            {
                using var old = Connect(port, digests: false, isid: 0x5151);
                using var other = Connect(port, digests: false, isid: 0x5252);
                Assert.Equal(2, target.ConnectionCount);
                using var again = Connect(port, digests: false, isid: 0x5151);

                // The old session was closed before the new login was answered; the other port's session stays.
                Assert.Equal(2, target.ConnectionCount);
                Assert.Equal(0, old.Receive(new byte[48]));
                var c = new RawInitiator(again, digests: false);
                c.Send(Rw(false, 0), null, Block);
                Assert.Equal(ScsiStatus.Good, c.Receive().Status);
                c.Logout();
            });
        }
        finally
        {
            await target.DisposeAsync();
        }
    }

    private static byte[] Prout(byte action, byte type)
    {
        var cdb = new byte[16];
        cdb[0] = 0x5F;
        cdb[1] = action;
        cdb[2] = type;
        cdb[8] = 24;
        return cdb;
    }

    private static byte[] ProutList(ulong key, ulong serviceKey)
    {
        var list = new byte[24];
        BinaryPrimitives.WriteUInt64BigEndian(list, key);
        BinaryPrimitives.WriteUInt64BigEndian(list.AsSpan(8), serviceKey);
        return list;
    }

    [Fact]
    public async Task IdleConnectionsThatNeverLogInDoNotLockOutALoginEvenWhenMoreThanTheSessionLimit()
    {
        // Two sessions allowed; eight TCP connections that never send a byte must not take those places.
        using var device = new MemoryBlockDevice(16 << 20);
        var target = new IscsiTarget(new IscsiTargetOptions { Portal = "127.0.0.1:0", TargetName = Iqn, MaxConnections = 2 }, new Dictionary<int, ScsiDisk> { [1] = new ScsiDisk(device, "idle") });
        target.Start();
        int port = target.LocalEndPoint.Port;
        var idle = new List<Socket>();
        try
        {
            await Task.Run(() =>
            {
                for (int i = 0; i < 8; i++)
                {
                    var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                    s.Connect(System.Net.IPAddress.Loopback, port);
                    idle.Add(s);
                }

                WaitUntil(() => target.ConnectionCount == 8, "the idle connections to be accepted");
                using var a = Connect(port, digests: false);
                using var b = Connect(port, digests: false);
                var c = new RawInitiator(b, digests: false);
                c.Send(Rw(false, 0), null, Block);
                Assert.Equal(ScsiStatus.Good, c.Receive().Status);
                c.Logout();
            });
        }
        finally
        {
            idle.ForEach(s => s.Dispose());
            await target.DisposeAsync();
        }
    }

    [Fact]
    public async Task ConnectionsThatDoNotLogInInTimeAndSilentDiscoverySessionsAreDroppedAndTheOldestPendingGoesFirst()
    {
        using var device = new MemoryBlockDevice(16 << 20);
        var options = new IscsiTargetOptions { Portal = "127.0.0.1:0", TargetName = Iqn, MaxPendingLogins = 2, LoginTimeout = TimeSpan.FromSeconds(1) };
        var target = new IscsiTarget(options, new Dictionary<int, ScsiDisk> { [1] = new ScsiDisk(device, "timeout") });
        target.Start();
        int port = target.LocalEndPoint.Port;
        try
        {
            await Task.Run(() =>
            {
                Socket Open()
                {
                    var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveTimeout = 10_000 };
                    s.Connect(System.Net.IPAddress.Loopback, port);
                    return s;
                }

                // Three pending with room for two: the first is closed at once.
                using var first = Open();
                WaitUntil(() => target.ConnectionCount == 1, "the first connection to be accepted");
                using var second = Open();
                using var third = Open();
                Assert.Equal(0, first.Receive(new byte[48]));

                // A discovery session that logs in and then says nothing.
                using var discovery = Open();
                Login(discovery, 0x81, "InitiatorName=iqn.2026-11.org.hci.test:raw\0SessionType=Discovery\0AuthMethod=None\0", 7);
                Login(discovery, 0x87, "HeaderDigest=None\0DataDigest=None\0", 7);

                // A normal session keeps its place; everything else goes within the login timeout.
                using var normal = Connect(port, digests: false);
                Assert.Equal(0, second.Receive(new byte[48]));
                Assert.Equal(0, third.Receive(new byte[48]));
                Assert.Equal(0, discovery.Receive(new byte[48]));
                WaitUntil(() => target.ConnectionCount == 1, "only the normal session to be left");
            });
        }
        finally
        {
            await target.DisposeAsync();
        }

        Assert.Throws<ArgumentException>(() => new IscsiTargetOptions { TargetName = Iqn, LoginTimeout = TimeSpan.Zero }.Validate());
        Assert.Throws<ArgumentException>(() => new IscsiTargetOptions { TargetName = Iqn, MaxPendingLogins = 0 }.Validate());
    }

    [Fact]
    public async Task CommandsPastACmdSnGapWaitForItAndAResentCommandDoesNotRunTwice()
    {
        using var device = new MemoryBlockDevice(16 << 20);
        var target = new IscsiTarget(new IscsiTargetOptions { Portal = "127.0.0.1:0", TargetName = Iqn }, new Dictionary<int, ScsiDisk> { [1] = new ScsiDisk(device, "cmdsn") });
        target.Start();
        int port = target.LocalEndPoint.Port;
        try
        {
            await Task.Run(() =>
            {
                using var s = Connect(port, digests: false);
                var c = new RawInitiator(s, digests: false);
                uint first = c.CmdSn;
                c.Skip(2);

                // The second command (B) arrives before the first (A): A must run first, so the block ends as B.
                c.Send(Rw(true, 9), Enumerable.Repeat((byte)'B', Block).ToArray(), 0, cmdSn: first + 1);
                c.Send(Rw(true, 9), Enumerable.Repeat((byte)'A', Block).ToArray(), 0, cmdSn: first);
                Assert.Equal(ScsiStatus.Good, c.Receive().Status);
                Assert.Equal(ScsiStatus.Good, c.Receive().Status);

                // A resend of the second is below ExpCmdSN now: dropped, not run again (no answer comes for it).
                c.Send(Rw(true, 9), Enumerable.Repeat((byte)'C', Block).ToArray(), 0, cmdSn: first + 1);
                c.Send(Rw(false, 9), null, Block);
                var (status, data) = c.Receive();
                Assert.Equal(ScsiStatus.Good, status);
                Assert.Equal(Block, data.Length); // the READ's answer is the next: none came for the resend
                Assert.Equal(-1, data.AsSpan().IndexOfAnyExcept((byte)'B'));
                c.Logout();
            });
        }
        finally
        {
            await target.DisposeAsync();
        }
    }

    [Fact]
    public async Task DirectionBitsMustMatchTheCdbAndAPartialBlockReadReturnsDataNotStaleBytes()
    {
        using var device = new MemoryBlockDevice(16 << 20);
        var target = new IscsiTarget(new IscsiTargetOptions { Portal = "127.0.0.1:0", TargetName = Iqn }, new Dictionary<int, ScsiDisk> { [1] = new ScsiDisk(device, "direction") });
        target.Start();
        int port = target.LocalEndPoint.Port;
        try
        {
            await Task.Run(() =>
            {
                using var s = Connect(port, digests: false);
                var c = new RawInitiator(s, digests: false);
                var two = new byte[16];
                two[0] = 0x2A;
                BinaryPrimitives.WriteUInt32BigEndian(two.AsSpan(2), 20);
                two[8] = 2;
                c.Send(two, Enumerable.Repeat((byte)'P', 2 * Block).ToArray(), 0);
                Assert.Equal(ScsiStatus.Good, c.Receive().Status);
                two[0] = 0x2A;
                BinaryPrimitives.WriteUInt32BigEndian(two.AsSpan(2), 40);
                c.Send(two, Enumerable.Repeat((byte)'S', 2 * Block).ToArray(), 0); // leaves 'S' in the command buffer
                Assert.Equal(ScsiStatus.Good, c.Receive().Status);

                // A WRITE sent as a read (R bit, no data): refused, nothing written, no data returned.
                c.Send(Rw(true, 20), null, Block);
                var (status, data) = c.Receive();
                Assert.Equal(ScsiStatus.CheckCondition, status);
                Assert.Empty(data);

                // READ of two blocks, 6000 bytes expected: 6000 bytes of the medium, none of the buffer's old 'S'.
                two[0] = 0x28;
                BinaryPrimitives.WriteUInt32BigEndian(two.AsSpan(2), 20);
                c.Send(two, null, 6000);
                (status, data) = c.Receive();
                Assert.Equal(ScsiStatus.Good, status);
                Assert.Equal(6000, data.Length);
                Assert.Equal(-1, data.AsSpan().IndexOfAnyExcept((byte)'P'));
                c.Logout();
            });
        }
        finally
        {
            await target.DisposeAsync();
        }
    }

    [Fact]
    public async Task LoginOnlyKeysAreRefusedInTextAfterLogin()
    {
        using var device = new MemoryBlockDevice(16 << 20);
        var target = new IscsiTarget(new IscsiTargetOptions { Portal = "127.0.0.1:0", TargetName = Iqn }, new Dictionary<int, ScsiDisk> { [1] = new ScsiDisk(device, "text") });
        target.Start();
        int port = target.LocalEndPoint.Port;
        try
        {
            await Task.Run(() =>
            {
                using var s = Connect(port, digests: false);
                var c = new RawInitiator(s, digests: false);
                string answer = c.Text("HeaderDigest=CRC32C\0DataDigest=CRC32C\0MaxBurstLength=512\0MaxRecvDataSegmentLength=16777215\0");
                Assert.Contains("HeaderDigest=Reject", answer);
                Assert.Contains("DataDigest=Reject", answer);
                Assert.Contains("MaxBurstLength=Reject", answer);
                Assert.Contains("MaxRecvDataSegmentLength=", answer);

                // Still no digests either way.
                c.Send(Rw(false, 0), null, Block);
                Assert.Equal(ScsiStatus.Good, c.Receive().Status);
                c.Logout();
            });
        }
        finally
        {
            await target.DisposeAsync();
        }
    }

    private static unsafe int UnsentBytes(Socket s)
    {
        int n = 0;
        const int TIOCOUTQ = 0x5411; // bytes in the send queue not yet acknowledged by the peer
        return Tmds.Linux.LibC.ioctl((int)s.Handle, TIOCOUTQ, &n) == 0 ? n : -1;
    }
}
