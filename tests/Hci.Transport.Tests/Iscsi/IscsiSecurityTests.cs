using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Hci.Core.Devices;
using Hci.Transport.Iscsi;
using Hci.Transport.Scsi;

namespace Hci.Transport.Tests;

/// <summary>
/// CHAP as a hostile initiator sees it, over a raw socket: a reflected challenge in another encoding, failed logins
/// answered only after a pause that holds no other connection up, and secrets too short or the same both ways
/// refused at start-up.
/// </summary>
public sealed class IscsiSecurityTests
{
    private const string Iqn = "iqn.2026-11.org.hci.test:security";
    private const string User = "alice";
    private const string Secret = "alice-secret-123";
    private const string TargetSecret = "target-secret-456";

    [Fact]
    public async Task AMutualChapChallengeEqualToTheTargetsOwnInAnotherEncodingIsRefused()
    {
        // The initiator answers the target's challenge (it knows the secret here, to reach the check) and then
        // challenges the target with the target's own challenge written in lower case: the target would answer its
        // own challenge, which is what a reflection attack needs. The decoded bytes are the same: refused.
        await using var fixture = await Fixture.StartAsync(TimeSpan.Zero);
        await Task.Run(() =>
        {
            using var s = fixture.Open();
            var (id, challenge) = StartChap(s);
            string response = "0x" + Convert.ToHexString(ChapResponse(id, Secret, challenge));
            string reflected = "0x" + Convert.ToHexString(challenge).ToLowerInvariant();
            var (header, _) = Send(s, 0x81, $"CHAP_N={User}\0CHAP_R={response}\0CHAP_I=7\0CHAP_C={reflected}\0");
            Assert.Equal(2, header[36]); // initiator error: authentication failed

            // With a challenge of its own the same initiator logs in.
            using var again = fixture.Open();
            (id, challenge) = StartChap(again);
            response = "0x" + Convert.ToHexString(ChapResponse(id, Secret, challenge));
            var (ok, text) = Send(again, 0x81, $"CHAP_N={User}\0CHAP_R={response}\0CHAP_I=7\0CHAP_C=0x0102030405060708090a0b0c0d0e0f10\0");
            Assert.Equal(0, ok[36]);
            Assert.Contains("CHAP_N=target", text);
        });
    }

    [Fact]
    public async Task AFailedLoginIsAnsweredAfterAPauseWhileOtherConnectionsLogInMeanwhile()
    {
        await using var fixture = await Fixture.StartAsync(TimeSpan.FromSeconds(2));
        await Task.Run(() =>
        {
            using var bad = fixture.Open();
            var (_, _) = StartChap(bad);
            var watch = Stopwatch.StartNew();
            Write(bad, 0x81, $"CHAP_N={User}\0CHAP_R=0x00112233445566778899aabbccddeeff\0");

            // Meanwhile another initiator logs in with the right secret, unhindered.
            using var good = fixture.Open();
            var (id, challenge) = StartChap(good);
            var (ok, _) = Send(good, 0x81, $"CHAP_N={User}\0CHAP_R=0x{Convert.ToHexString(ChapResponse(id, Secret, challenge))}\0");
            Assert.Equal(0, ok[36]);
            var goodDone = watch.Elapsed;

            var (header, _) = Read(bad);
            var badDone = watch.Elapsed;
            Assert.Equal(2, header[36]);
            Assert.True(badDone >= TimeSpan.FromSeconds(1.9), $"the failure was answered after {badDone}");
            Assert.True(goodDone < badDone, $"the good login took {goodDone}, the failure {badDone}");
        });
    }

    [Fact]
    public async Task OnlyAllowedInitiatorsMayOpenNormalSessions()
    {
        using var device = new MemoryBlockDevice(16 << 20);
        var options = new IscsiTargetOptions { Portal = "127.0.0.1:0", TargetName = Iqn, FailedLoginDelay = TimeSpan.Zero, AllowedInitiators = ["iqn.2026-11.org.hci.test:Allowed"] };
        await using var target = new IscsiTarget(options, new Dictionary<int, ScsiDisk> { [1] = new ScsiDisk(device, "acl") });
        target.Start();
        await Task.Run(() =>
        {
            (byte[] Header, string Text) Try(string name)
            {
                using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveTimeout = 10_000 };
                s.Connect(IPAddress.Loopback, target.LocalEndPoint.Port);
                return Send(s, 0x81, $"InitiatorName={name}\0TargetName={Iqn}\0SessionType=Normal\0AuthMethod=None\0");
            }

            var (refused, _) = Try("iqn.2026-11.org.hci.test:intruder");
            Assert.Equal((2, 2), (refused[36], refused[37])); // authorization failure
            var (ok, _) = Try("iqn.2026-11.org.hci.test:allowed");
            Assert.Equal(0, ok[36]);
        });
    }

    [Fact]
    public void ChapSecretsShorterThanTwelveBytesOrTheSameBothWaysAreRefusedAtStartUp()
    {
        IscsiTargetOptions Options(string secret, string? mutual) => new()
        {
            TargetName = Iqn,
            ChapUser = User,
            ChapSecret = secret,
            MutualChapUser = mutual == null ? null : "target",
            MutualChapSecret = mutual,
        };

        var e = Assert.Throws<ArgumentException>(() => Options("short-11byt", null).Validate());
        Assert.Contains("12 bytes", e.Message);
        Assert.Throws<ArgumentException>(() => Options(Secret, "short").Validate());
        e = Assert.Throws<ArgumentException>(() => Options(Secret, Secret).Validate());
        Assert.Contains("differ", e.Message);
        Options(Secret, TargetSecret).Validate();
        Assert.Throws<ArgumentException>(() => new IscsiTargetOptions { TargetName = Iqn, FailedLoginDelay = TimeSpan.FromMinutes(1) }.Validate());
    }

    private static (byte Id, byte[] Challenge) StartChap(Socket s)
    {
        var (h, text) = Send(s, 0x00, $"InitiatorName=iqn.2026-11.org.hci.test:chap\0TargetName={Iqn}\0SessionType=Normal\0AuthMethod=CHAP\0");
        Assert.Equal(0, h[36]);
        Assert.Contains("AuthMethod=CHAP", text);
        (h, text) = Send(s, 0x00, "CHAP_A=5\0");
        Assert.Equal(0, h[36]);
        var keys = text.Split('\0', StringSplitOptions.RemoveEmptyEntries).Select(k => k.Split('=', 2)).ToDictionary(k => k[0], k => k[1]);
        return (byte.Parse(keys["CHAP_I"], System.Globalization.CultureInfo.InvariantCulture), Convert.FromHexString(keys["CHAP_C"][2..]));
    }

    private static byte[] ChapResponse(byte id, string secret, byte[] challenge) => MD5.HashData([id, .. Encoding.UTF8.GetBytes(secret), .. challenge]);

    private static (byte[] Header, string Text) Send(Socket s, byte stages, string keys)
    {
        Write(s, stages, keys);
        return Read(s);
    }

    private static void Write(Socket s, byte stages, string keys)
    {
        var text = Encoding.ASCII.GetBytes(keys);
        var pdu = new byte[48 + ((text.Length + 3) & ~3)];
        pdu[0] = 0x43;
        pdu[1] = stages;
        pdu[6] = (byte)(text.Length >> 8);
        pdu[7] = (byte)text.Length;
        pdu[8] = 0x80;
        BinaryPrimitives.WriteUInt16BigEndian(pdu.AsSpan(12), (ushort)s.LocalEndPoint!.GetHashCode()); // an ISID per connection
        pdu[27] = 1;
        text.CopyTo(pdu, 48);
        s.Send(pdu);
    }

    private static (byte[] Header, string Text) Read(Socket s)
    {
        var header = new byte[48];
        ReadExactly(s, header);
        var data = new byte[(((header[5] << 16) | (header[6] << 8) | header[7]) + 3) & ~3];
        ReadExactly(s, data);
        Assert.Equal(0x23, header[0]);
        return (header, Encoding.ASCII.GetString(data));
    }

    private static void ReadExactly(Socket s, Span<byte> into)
    {
        while (into.Length > 0)
        {
            int n = s.Receive(into);
            if (n == 0)
            {
                throw new EndOfStreamException();
            }

            into = into[n..];
        }
    }

    private sealed class Fixture : IAsyncDisposable
    {
        private readonly MemoryBlockDevice _device = new(16 << 20);
        private IscsiTarget? _target;

        public int Port => _target!.LocalEndPoint.Port;

        public static Task<Fixture> StartAsync(TimeSpan failedLoginDelay)
        {
            var f = new Fixture();
            var options = new IscsiTargetOptions
            {
                Portal = "127.0.0.1:0",
                TargetName = Iqn,
                ChapUser = User,
                ChapSecret = Secret,
                MutualChapUser = "target",
                MutualChapSecret = TargetSecret,
                FailedLoginDelay = failedLoginDelay,
            };
            f._target = new IscsiTarget(options, new Dictionary<int, ScsiDisk> { [1] = new ScsiDisk(f._device, "chap") });
            f._target.Start();
            return Task.FromResult(f);
        }

        public Socket Open()
        {
            var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveTimeout = 10_000, NoDelay = true };
            s.Connect(IPAddress.Loopback, Port);
            return s;
        }

        public async ValueTask DisposeAsync()
        {
            if (_target != null)
            {
                await _target.DisposeAsync();
            }

            _device.Dispose();
        }
    }
}
