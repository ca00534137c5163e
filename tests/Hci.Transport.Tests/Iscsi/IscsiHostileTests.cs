using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Hci.Core.Devices;
using Hci.Transport.Iscsi;
using Hci.Transport.Scsi;
using static Hci.Testing.IscsiProbe;

namespace Hci.Transport.Tests;

/// <summary>
/// A hostile initiator against the target: randomized PDUs (bad opcodes, flags, lengths past the negotiated
/// limits, garbage CDBs, data that never comes, broken login sequences), half of them after a valid login. The
/// target must neither crash nor hang, must keep serving, and a well-behaved session must work afterwards, also
/// while a hostile one is open beside it.
/// </summary>
public sealed class IscsiHostileTests
{
    private const string Iqn = "iqn.2026-11.org.hci.test:hostile";
    private const int Pdus = 100_000;

    [Fact]
    public async Task HundredThousandHostilePdusNeitherCrashNorHangAndOtherSessionsAreServed()
    {
        using var device = new MemoryBlockDevice(16 << 20);
        await using var target = new IscsiTarget(new IscsiTargetOptions { Portal = "127.0.0.1:0", TargetName = Iqn }, new Dictionary<int, ScsiDisk> { [1] = new ScsiDisk(device, "hostile") });
        target.Start();
        var endpoint = new IPEndPoint(IPAddress.Loopback, target.LocalEndPoint.Port);

        // A well-behaved session stays open beside the hostile ones and is used at the end.
        using var good = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await good.ConnectAsync(endpoint);
        Assert.True(await Login(good, 1, isid: 2), "the well-behaved login failed");

        // The flood runs for minutes, far past the target's NOP-In timeout: the good session answers the target's
        // pings meanwhile, as a real initiator would, so that it is still there afterwards.
        int connections;
        using (new PingAnswerer(good, cmdSn: 1))
        {
            connections = await Flood(endpoint);
        }

        Assert.True(connections > 10, $"only {connections} connections");

        // The good session still answers: TEST UNIT READY and READ CAPACITY(10) over it.
        Assert.Equal(0, await Command(good, 1, [0x00], 0));
        Assert.Equal(0, await Command(good, 2, [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8));

        // And a fresh one logs in.
        using var fresh = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await fresh.ConnectAsync(endpoint);
        Assert.True(await Login(fresh, 1, isid: 3));
        Assert.Equal(0, await Command(fresh, 1, [0x00], 0));
    }

    [Fact]
    public async Task ThirtyThousandMangledLoginPdusNeitherCrashNorHangNorLeakConnections()
    {
        using var device = new MemoryBlockDevice(16 << 20);
        await using var target = new IscsiTarget(new IscsiTargetOptions { Portal = "127.0.0.1:0", TargetName = Iqn }, new Dictionary<int, ScsiDisk> { [1] = new ScsiDisk(device, "hostile") });
        target.Start();
        var endpoint = new IPEndPoint(IPAddress.Loopback, target.LocalEndPoint.Port);
        using var good = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await good.ConnectAsync(endpoint);
        Assert.True(await Login(good, 1, isid: 2), "the well-behaved login failed");

        var rng = new Random(1234);
        var watch = Stopwatch.StartNew();
        string[] keys =
        [
            "InitiatorName=iqn.2026-11.org.hci.test:fuzzer", "InitiatorName=", "InitiatorName=" + new string('x', 300),
            $"TargetName={Iqn}", "TargetName=iqn.2026-11.org.nowhere:none", "TargetName=",
            "SessionType=Normal", "SessionType=Discovery", "SessionType=Other",
            "AuthMethod=None", "AuthMethod=CHAP", "AuthMethod=CHAP,None", "AuthMethod=SRP", "AuthMethod=",
            "CHAP_A=5", "CHAP_A=7,5", "CHAP_A=x", "CHAP_N=someone", "CHAP_R=0x00", "CHAP_R=0b!!", "CHAP_I=300", "CHAP_C=0x",
            "HeaderDigest=CRC32C", "HeaderDigest=None", "HeaderDigest=CRC32C,None", "HeaderDigest=MD5", "DataDigest=CRC32C,None",
            "MaxRecvDataSegmentLength=512", "MaxRecvDataSegmentLength=0", "MaxRecvDataSegmentLength=99999999999", "MaxRecvDataSegmentLength=-1", "MaxRecvDataSegmentLength=0x2000",
            "MaxBurstLength=512", "MaxBurstLength=16777216", "FirstBurstLength=1048576", "FirstBurstLength=1",
            "ImmediateData=Yes", "ImmediateData=No", "ImmediateData=Maybe", "InitialR2T=No", "InitialR2T=",
            "MaxConnections=1", "MaxConnections=65536", "MaxConnections=0", "ErrorRecoveryLevel=0", "ErrorRecoveryLevel=2", "ErrorRecoveryLevel=9",
            "DefaultTime2Wait=0", "DefaultTime2Retain=3601", "MaxOutstandingR2T=0", "MaxOutstandingR2T=65535",
            "DataPDUInOrder=No", "DataSequenceInOrder=Yes", "IFMarker=Yes", "OFMarker=No", "X-com.example.key=value", "NoEquals", "=value", "A=B=C",
            "TargetAlias=x", "TargetPortalGroupTag=1", "SendTargets=All",
        ];
        int pdus = 0;
        int connections = 0;
        var sink = new byte[65536];
        var pinged = new PingAnswerer(good, cmdSn: 1); // the good session answers the target's pings meanwhile
        while (pdus < 30_000)
        {
            Assert.True(watch.Elapsed < TimeSpan.FromMinutes(3), $"stuck after {pdus} login PDUs");
            using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { SendTimeout = 2000, ReceiveTimeout = 2000 };
            await s.ConnectAsync(endpoint);
            connections++;
            var isid = new byte[6];
            rng.NextBytes(isid);
            int steps = rng.Next(1, 7);
            for (int step = 0; step < steps; step++, pdus++)
            {
                // A login request with stages, version and tags that are sometimes right, and keys in a random mix.
                var text = new StringBuilder();
                for (int k = rng.Next(0, 9); k > 0; k--)
                {
                    text.Append(keys[rng.Next(keys.Length)]).Append(rng.Next(40) == 0 ? "" : "\0");
                }

                byte[] body = Encoding.ASCII.GetBytes(text.ToString());
                var pdu = new byte[48 + ((body.Length + 3) & ~3)];
                pdu[0] = rng.Next(15) == 0 ? (byte)rng.Next(256) : (byte)0x43;
                pdu[1] = rng.Next(4) switch
                {
                    0 => (byte)rng.Next(256),
                    1 => 0x81, // security -> operational
                    2 => 0x87, // operational -> full feature
                    _ => (byte)(0x40 | (rng.Next(2) << 2)), // continue
                };
                pdu[2] = rng.Next(20) == 0 ? (byte)rng.Next(256) : (byte)0;
                pdu[3] = rng.Next(20) == 0 ? (byte)rng.Next(256) : (byte)0;
                int claimed = rng.Next(30) == 0 ? rng.Next(1 << 24) : body.Length;
                pdu[5] = (byte)(claimed >> 16);
                pdu[6] = (byte)(claimed >> 8);
                pdu[7] = (byte)claimed;
                isid.CopyTo(pdu, 8);
                if (rng.Next(10) == 0)
                {
                    rng.NextBytes(pdu.AsSpan(14, 2)); // a TSIH that names no session
                }

                BinaryPrimitives.WriteUInt32BigEndian(pdu.AsSpan(24), (uint)rng.Next(3));
                body.CopyTo(pdu, 48);
                int length = rng.Next(25) == 0 ? rng.Next(1, pdu.Length) : pdu.Length; // sometimes cut short
                try
                {
                    s.Send(pdu, 0, length, SocketFlags.None);
                    if (rng.Next(50) == 0)
                    {
                        await Task.Yield(); // now and then let the target take what came before the next PDU
                    }

                    while (s.Available > 0 && s.Receive(sink) > 0)
                    {
                    }
                }
                catch (SocketException)
                {
                    break; // the target dropped it, as it may
                }
            }
        }

        // The good session still works, a fresh login works, and every mangled connection has gone.
        pinged.Dispose();
        Assert.Equal(0, await Command(good, 1, [0x00], 0));
        using var fresh = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await fresh.ConnectAsync(endpoint);
        Assert.True(await Login(fresh, 1, isid: 3));
        Assert.Equal(0, await Command(fresh, 1, [0x00], 0));
        await Hci.Testing.Deadline.WaitUntilAsync(() => target.ConnectionCount <= 2, $"the {connections} mangled connections to close", detail: () => $"{target.ConnectionCount} connections still open");
    }

    private static async Task<int> Flood(IPEndPoint endpoint)
    {
        var rng = new Random(77);
        var watch = Stopwatch.StartNew();
        Socket? s = null;
        int connections = 0;
        var pdu = new byte[48 + 9000];
        var sink = new byte[65536];
        uint cmdSn = 1;
        for (int sent = 0; sent < Pdus; sent++)
        {
            Assert.True(watch.Elapsed < TimeSpan.FromMinutes(4), $"stuck after {sent} PDUs");
            if (s == null || rng.Next(3000) == 0)
            {
                s?.Dispose();
                s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { SendTimeout = 2000, ReceiveTimeout = 2000 };
                s.Connect(endpoint);
                connections++;
                cmdSn = 1;
                if (rng.Next(2) == 0 && !await Login(s, cmdSn))
                {
                    s.Dispose();
                    s = null;
                    continue;
                }
            }

            int dataLength = rng.Next(4) switch
            {
                0 => 0,
                1 => rng.Next(1, 64),
                2 => rng.Next(64, 9000),
                _ => rng.Next(0, 1 << 24), // claimed, not sent
            };
            int actual = Math.Min(dataLength, 9000);
            pdu.AsSpan(0, 48 + actual).Clear();
            rng.NextBytes(pdu.AsSpan(0, 48));
            byte[] opcodes = [0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x10, 0x1c, 0x3f, 0x41, 0x43];
            pdu[0] = rng.Next(5) == 0 ? (byte)rng.Next(256) : opcodes[rng.Next(opcodes.Length)];
            pdu[4] = rng.Next(10) == 0 ? pdu[4] : (byte)0;
            pdu[5] = (byte)(dataLength >> 16);
            pdu[6] = (byte)(dataLength >> 8);
            pdu[7] = (byte)dataLength;
            if (rng.Next(2) == 0)
            {
                BinaryPrimitives.WriteUInt64BigEndian(pdu.AsSpan(8), 1UL << 48); // LUN 1
                BinaryPrimitives.WriteUInt32BigEndian(pdu.AsSpan(24), cmdSn++);
            }

            if (rng.Next(3) == 0)
            {
                BinaryPrimitives.WriteUInt32BigEndian(pdu.AsSpan(20), (uint)rng.Next(0, 1 << 20)); // a plausible EDTL
            }

            rng.NextBytes(pdu.AsSpan(48, actual));
            try
            {
                s.Send(pdu, 0, 48 + ((actual + 3) & ~3 & 0xFFFFFF), SocketFlags.None);
                while (s.Available > 0)
                {
                    if (s.Receive(sink) == 0)
                    {
                        break;
                    }
                }
            }
            catch (SocketException)
            {
                s.Dispose();
                s = null;
            }
        }

        s?.Dispose();
        return connections;
    }

    // The ISID names the initiator port: a login with the name and ISID of an open session reinstates (closes) it.
    private static Task<bool> Login(Socket s, uint cmdSn, byte isid = 1) => IscsiProbe.Login(s, "iqn.2026-11.org.hci.test:fuzzer", Iqn, isid, cmdSn);

    /// <summary>
    /// Answers the target's NOP-In pings on an otherwise idle session from a thread of its own until disposed, so that
    /// a session left waiting while a long flood runs is not dropped as silent. It reads only whole PDUs and stops
    /// between them, so the session can be used again afterwards.
    /// </summary>
    private sealed class PingAnswerer : IDisposable
    {
        private readonly Socket _socket;
        private readonly uint _cmdSn;
        private readonly Thread _thread;
        private volatile bool _stop;

        public PingAnswerer(Socket socket, uint cmdSn)
        {
            _socket = socket;
            _cmdSn = cmdSn;
            _thread = new Thread(Run) { IsBackground = true, Name = "ping-answerer" };
            _thread.Start();
        }

        public int Answered { get; private set; }

        public void Dispose()
        {
            _stop = true;
            _thread.Join();
        }

        private void Run()
        {
            var header = new byte[48];
            while (!_stop)
            {
                if (!_socket.Poll(TimeSpan.FromMilliseconds(100), SelectMode.SelectRead))
                {
                    continue; // nothing yet: look at the stop flag again
                }

                if (!ReadExactly(header))
                {
                    return; // the target closed the session: the test's later command reports it
                }

                var data = new byte[((header[5] << 16) | (header[6] << 8) | header[7]) + 3 & ~3];
                if (!ReadExactly(data))
                {
                    return;
                }

                if ((header[0] & 0x3F) == 0x20 && BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(20)) != 0xFFFFFFFF)
                {
                    var reply = new byte[48];
                    reply[0] = 0x40; // NOP-Out, immediate
                    reply[1] = 0x80;
                    BinaryPrimitives.WriteUInt32BigEndian(reply.AsSpan(16), 0xFFFFFFFF);
                    header.AsSpan(20, 4).CopyTo(reply.AsSpan(20)); // the target's tag
                    BinaryPrimitives.WriteUInt32BigEndian(reply.AsSpan(24), _cmdSn);
                    _socket.Send(reply);
                    Answered++;
                }
            }
        }

        private bool ReadExactly(Span<byte> into)
        {
            while (into.Length > 0)
            {
                int n = _socket.Receive(into);
                if (n == 0)
                {
                    return false;
                }

                into = into[n..];
            }

            return true;
        }
    }
}
