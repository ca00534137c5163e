using System.Text;
using Hci.Transport.Iscsi;

namespace Hci.Transport.Tests;

/// <summary>The iSCSI groundwork: digests, the header view, text parsing and operational negotiation.</summary>
public sealed class IscsiBasicsTests
{
    [Fact]
    public void Crc32cMatchesTheStandardsVectors()
    {
        Assert.Equal(0xE3069283u, IscsiDigest.Compute("123456789"u8));

        // RFC 3720, B.4.
        Assert.Equal(0x8A9136AAu, IscsiDigest.Compute(new byte[32]));
        Assert.Equal(0x62A8AB43u, IscsiDigest.Compute(Enumerable.Repeat((byte)0xFF, 32).ToArray()));
        Assert.Equal(0x46DD794Eu, IscsiDigest.Compute(Enumerable.Range(0, 32).Select(i => (byte)i).ToArray()));
        Assert.Equal(0x113FDB5Cu, IscsiDigest.Compute(Enumerable.Range(0, 32).Select(i => (byte)(31 - i)).ToArray()));

        // Split anywhere, the running form gives the same digest; the wire form is little-endian.
        var data = Enumerable.Range(0, 1000).Select(i => (byte)(i * 7)).ToArray();
        for (int cut = 0; cut <= data.Length; cut += 37)
        {
            Assert.Equal(IscsiDigest.Compute(data), ~IscsiDigest.Append(IscsiDigest.Append(0xFFFFFFFF, data.AsSpan(0, cut)), data.AsSpan(cut)));
        }

        var wire = new byte[4];
        IscsiDigest.Write(IscsiDigest.Compute(data), wire);
        Assert.True(IscsiDigest.Verify(data, wire));
        wire[0] ^= 1;
        Assert.False(IscsiDigest.Verify(data, wire));
    }

    [Fact]
    public void TheHeaderViewReadsAndWritesEveryCommonField()
    {
        var bytes = new byte[IscsiHeader.Length];
        var h = new IscsiHeader(bytes)
        {
            Opcode = IscsiOpcode.ScsiCommand,
            Immediate = true,
            Final = true,
            AdditionalHeaderLength = 8,
            DataSegmentLength = 0x123456,
            Lun = 0x0001000000000000,
            InitiatorTaskTag = 0xDEADBEEF,
        };
        h.SetField(24, 42);
        Assert.Equal(0x41, bytes[0]);
        Assert.Equal(0x80, bytes[1]);
        Assert.Equal(2, bytes[4]);
        Assert.Equal(new byte[] { 0x12, 0x34, 0x56 }, bytes[5..8]);
        Assert.Equal(IscsiOpcode.ScsiCommand, h.Opcode);
        Assert.True(h.Immediate);
        Assert.Equal(0x123458, h.PaddedDataSegmentLength);
        Assert.Equal(0xDEADBEEFu, h.InitiatorTaskTag);
        Assert.Equal(42u, h.Field(24));
        h.Immediate = false;
        Assert.Equal(IscsiOpcode.ScsiCommand, h.Opcode);
        Assert.Throws<ArgumentOutOfRangeException>(() => new IscsiHeader(bytes).DataSegmentLength = 1 << 24);
        Assert.Throws<ArgumentOutOfRangeException>(() => new IscsiHeader(bytes).Field(18));
        Assert.Throws<ArgumentException>(() => new IscsiHeader(new byte[47]));
    }

    [Fact]
    public void TextIsParsedStrictly()
    {
        var pairs = new List<KeyValuePair<string, string>>();
        Assert.Equal(IscsiTextError.None, IscsiText.Parse("InitiatorName=iqn.2007-10.com.example:a\0SessionType=Normal\0\0\0"u8, pairs));
        Assert.Equal([new("InitiatorName", "iqn.2007-10.com.example:a"), new("SessionType", "Normal")], pairs);
        Assert.Equal(IscsiTextError.None, IscsiText.Parse("Key=\0"u8, pairs));
        Assert.Equal("", pairs[0].Value);

        Assert.Equal(IscsiTextError.Malformed, IscsiText.Parse("NoEquals\0"u8, pairs));
        Assert.Equal(IscsiTextError.Malformed, IscsiText.Parse("Key=NoNul"u8, pairs));
        Assert.Equal(IscsiTextError.Malformed, IscsiText.Parse("A=1\0\0B=2\0"u8, pairs));
        Assert.Equal(IscsiTextError.Malformed, IscsiText.Parse(new byte[] { (byte)'A', (byte)'=', 0xFF, 0xFE, 0 }, pairs));
        Assert.Equal(IscsiTextError.BadKey, IscsiText.Parse("=value\0"u8, pairs));
        Assert.Equal(IscsiTextError.BadKey, IscsiText.Parse("Bad Key=1\0"u8, pairs));
        Assert.Equal(IscsiTextError.BadKey, IscsiText.Parse(Encoding.ASCII.GetBytes(new string('K', 64) + "=1\0"), pairs));
        Assert.Equal(IscsiTextError.Duplicate, IscsiText.Parse("A=1\0A=2\0"u8, pairs));
        Assert.Equal(IscsiTextError.ValueTooLong, IscsiText.Parse(Encoding.ASCII.GetBytes("A=" + new string('v', 8193) + "\0"), pairs));
        Assert.Equal(IscsiTextError.TooMany, IscsiText.Parse(Encoding.ASCII.GetBytes(string.Concat(Enumerable.Range(0, 257).Select(i => $"K{i}=1\0"))), pairs));

        var round = IscsiText.Format([new("A", "1"), new("TargetName", "iqn.x:y")]);
        Assert.Equal(IscsiTextError.None, IscsiText.Parse(round, pairs));
        Assert.Equal("iqn.x:y", pairs[1].Value);
    }

    [Fact]
    public void RandomTextNeverThrows()
    {
        var rng = new Random(3);
        var pairs = new List<KeyValuePair<string, string>>();
        var buffer = new byte[300];
        byte[] alphabet = "ab=\0\0=1Z.-_ \xff"u8.ToArray();
        for (int i = 0; i < 100_000; i++)
        {
            int n = rng.Next(buffer.Length);
            for (int j = 0; j < n; j++)
            {
                buffer[j] = rng.Next(4) == 0 ? (byte)rng.Next(256) : alphabet[rng.Next(alphabet.Length)];
            }

            var error = IscsiText.Parse(buffer.AsSpan(0, n), pairs);
            Assert.True(error != IscsiTextError.None || pairs.All(p => p.Key.Length is > 0 and <= 63));
        }
    }

    [Fact]
    public void OperationalKeysAreAnsweredByTheStandardsRules()
    {
        var target = new IscsiSessionParameters { HeaderDigest = true, DataDigest = false, MaxRecvDataSegmentLength = 262144, MaxBurstLength = 1 << 20, FirstBurstLength = 1 << 18, InitialR2T = false, MaxOutstandingR2T = 4 };
        var session = new IscsiSessionParameters();
        var response = new List<KeyValuePair<string, string>>();
        IscsiNegotiation.Respond(
            [
                new("InitiatorName", "iqn.x"), new("HeaderDigest", "CRC32C,None"), new("DataDigest", "CRC32C,None"),
                new("InitialR2T", "No"), new("ImmediateData", "Yes"), new("MaxRecvDataSegmentLength", "65536"),
                new("MaxBurstLength", "16776192"), new("FirstBurstLength", "2097152"), new("DefaultTime2Wait", "0"),
                new("DefaultTime2Retain", "0"), new("MaxOutstandingR2T", "0x10"), new("ErrorRecoveryLevel", "2"),
                new("DataPDUInOrder", "Yes"), new("DataSequenceInOrder", "Yes"), new("MaxConnections", "1"),
                new("IFMarker", "No"), new("X-com.example.Vendor", "1"), new("MaxBurstLength2", "1"),
            ],
            target,
            session,
            response);
        var answers = response.ToDictionary(p => p.Key, p => p.Value);
        Assert.False(answers.ContainsKey("InitiatorName"));
        Assert.Equal("CRC32C", answers["HeaderDigest"]);
        Assert.Equal("None", answers["DataDigest"]);
        Assert.Equal("No", answers["InitialR2T"]);
        Assert.Equal("Yes", answers["ImmediateData"]);
        Assert.Equal("262144", answers["MaxRecvDataSegmentLength"]);
        Assert.Equal("1048576", answers["MaxBurstLength"]);
        Assert.Equal("262144", answers["FirstBurstLength"]);
        Assert.Equal("2", answers["DefaultTime2Wait"]);
        Assert.Equal("0", answers["DefaultTime2Retain"]);
        Assert.Equal("4", answers["MaxOutstandingR2T"]);
        Assert.Equal("0", answers["ErrorRecoveryLevel"]);
        Assert.Equal("No", answers["IFMarker"]);
        Assert.Equal("NotUnderstood", answers["X-com.example.Vendor"]);
        Assert.Equal("NotUnderstood", answers["MaxBurstLength2"]);
        Assert.True(session.HeaderDigest);
        Assert.False(session.DataDigest);
        Assert.Equal(65536, session.MaxSendDataSegmentLength);
        Assert.Equal(262144, session.MaxRecvDataSegmentLength);
        Assert.False(session.InitialR2T);

        response.Clear();
        IscsiNegotiation.Respond([new("MaxBurstLength", "100"), new("InitialR2T", "Maybe"), new("DataDigest", "MD5"), new("ErrorRecoveryLevel", "0xZZ")], target, session, response);
        Assert.All(response, p => Assert.Equal("Reject", p.Value));
    }

    [Theory]
    [InlineData("MaxBurstLength=1048")]
    [InlineData("FirstBurstLength=65536", "MaxBurstLength=4096")]
    [InlineData("MaxBurstLength=512", "FirstBurstLength=16777215")]
    public void FirstBurstLengthNeverEndsAboveMaxBurstLengthWhateverTheOrderOfTheKeys(params string[] keys)
    {
        // Found by AFL++ (tests/fuzz/findings/iscsi-first-burst-over-max-burst): MaxBurstLength alone left
        // FirstBurstLength at its default 65536, above it (RFC 7143 13.14 forbids that).
        var target = new IscsiSessionParameters { MaxBurstLength = 1 << 20, FirstBurstLength = 1 << 18 };
        var session = new IscsiSessionParameters();
        var response = new List<KeyValuePair<string, string>>();
        IscsiNegotiation.Respond([.. keys.Select(k => new KeyValuePair<string, string>(k[..k.IndexOf('=')], k[(k.IndexOf('=') + 1)..]))], target, session, response);
        Assert.True(session.FirstBurstLength <= session.MaxBurstLength, $"FirstBurstLength {session.FirstBurstLength} > MaxBurstLength {session.MaxBurstLength}");
    }
}
