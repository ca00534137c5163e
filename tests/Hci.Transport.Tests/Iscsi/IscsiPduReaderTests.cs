using System.Buffers.Binary;
using Hci.Transport.Iscsi;

namespace Hci.Transport.Tests;

/// <summary>The PDU reader frames PDUs out of bytes, with no socket: whole PDUs only, digests checked, lengths bounded.</summary>
public sealed class IscsiPduReaderTests
{
    [Fact]
    public void APduSplitAcrossReadsComesOutWholeOnceItsLastByteArrives()
    {
        using var reader = new IscsiPduReader(64 * 1024) { MaxDataSegmentLength = 8192 };
        byte[] wire = Pdu(IscsiOpcode.NopOut, itt: 7, data: [1, 2, 3, 4, 5], headerDigest: false, dataDigest: false);
        for (int i = 0; i < wire.Length - 1; i++)
        {
            Assert.Equal(1, reader.Append(wire.AsSpan(i, 1)));
            Assert.Equal(PduReadStatus.NeedMore, reader.TryRead(out _));
        }

        reader.Append(wire.AsSpan(wire.Length - 1));
        Assert.Equal(PduReadStatus.Pdu, reader.TryRead(out var pdu));
        Assert.Equal(IscsiOpcode.NopOut, new IscsiHeader(pdu.Header).Opcode);
        Assert.Equal(7u, new IscsiHeader(pdu.Header).InitiatorTaskTag);
        Assert.Equal(new byte[] { 1, 2, 3, 4, 5 }, pdu.Data.ToArray()); // without its padding
        Assert.True(pdu.DataDigestOk);
        Assert.Equal(0, reader.Buffered);
        Assert.Equal(PduReadStatus.NeedMore, reader.TryRead(out _));
    }

    [Fact]
    public void SeveralPdusInOneReadComeOutInOrder()
    {
        using var reader = new IscsiPduReader(64 * 1024) { HeaderDigest = true, DataDigest = true, MaxDataSegmentLength = 8192 };
        byte[] wire = [.. Pdu(IscsiOpcode.ScsiCommand, 1, [], true, true), .. Pdu(IscsiOpcode.DataOut, 2, new byte[100], true, true), .. Pdu(IscsiOpcode.NopOut, 3, [9], true, true)];
        reader.Append(wire);
        for (uint itt = 1; itt <= 3; itt++)
        {
            Assert.Equal(PduReadStatus.Pdu, reader.TryRead(out var pdu));
            Assert.Equal(itt, new IscsiHeader(pdu.Header).InitiatorTaskTag);
            Assert.True(pdu.DataDigestOk);
        }

        Assert.Equal(PduReadStatus.NeedMore, reader.TryRead(out _));
    }

    [Fact]
    public void ABadHeaderDigestIsAFramingErrorAndABadDataDigestOnlyMarksThePdu()
    {
        using var reader = new IscsiPduReader(64 * 1024) { HeaderDigest = true, DataDigest = true, MaxDataSegmentLength = 8192 };
        byte[] good = Pdu(IscsiOpcode.NopOut, 1, [1, 2, 3, 4], true, true);
        byte[] badData = (byte[])good.Clone();
        badData[^1] ^= 1;
        reader.Append(badData);
        Assert.Equal(PduReadStatus.Pdu, reader.TryRead(out var pdu));
        Assert.False(pdu.DataDigestOk);

        byte[] badHeader = (byte[])good.Clone();
        badHeader[IscsiHeader.Length] ^= 1;
        reader.Append(badHeader);
        Assert.Equal(PduReadStatus.HeaderDigestError, reader.TryRead(out _));
    }

    [Fact]
    public void ADataSegmentOverTheNegotiatedLimitIsRefusedBeforeItsBytesAreAwaited()
    {
        using var reader = new IscsiPduReader(64 * 1024) { MaxDataSegmentLength = 512 };
        var header = new byte[IscsiHeader.Length];
        new IscsiHeader(header) { Opcode = IscsiOpcode.DataOut, DataSegmentLength = 513 };
        reader.Append(header); // only the header: the length alone condemns it
        Assert.Equal(PduReadStatus.DataSegmentTooLong, reader.TryRead(out _));
    }

    [Fact]
    public void ALimitLargerThanTheBufferNeverWaitsForBytesThatCannotFit()
    {
        using var reader = new IscsiPduReader(4096) { MaxDataSegmentLength = 1 << 24 };
        var header = new byte[IscsiHeader.Length];
        new IscsiHeader(header) { Opcode = IscsiOpcode.DataOut, DataSegmentLength = IscsiHeader.MaxDataSegmentLength };
        reader.Append(header);
        Assert.Equal(PduReadStatus.DataSegmentTooLong, reader.TryRead(out _));
    }

    [Fact]
    public unsafe void BytesReceivedAtTheTailAreFramedAfterAdvanceAndCompactionKeepsUnreadBytes()
    {
        using var reader = new IscsiPduReader(4096) { MaxDataSegmentLength = 1024 };
        byte[] one = Pdu(IscsiOpcode.NopOut, 1, new byte[1000], false, false);
        for (uint round = 0; round < 20; round++)
        {
            // As a receive into the tail would: part of a PDU, then the rest.
            reader.Compact();
            int half = one.Length / 2;
            one.AsSpan(0, half).CopyTo(new Span<byte>(reader.Tail, reader.FreeBytes));
            reader.Advance(half);
            Assert.Equal(PduReadStatus.NeedMore, reader.TryRead(out _));
            reader.Compact();
            one.AsSpan(half).CopyTo(new Span<byte>(reader.Tail, reader.FreeBytes));
            reader.Advance(one.Length - half);
            Assert.Equal(PduReadStatus.Pdu, reader.TryRead(out var pdu));
            Assert.Equal(1000, pdu.Data.Length);
        }

        Assert.Throws<ArgumentOutOfRangeException>(() => reader.Advance(reader.FreeBytes + 1));
    }

    internal static byte[] Pdu(IscsiOpcode opcode, uint itt, byte[] data, bool headerDigest, bool dataDigest)
    {
        var bytes = new List<byte>();
        var header = new byte[IscsiHeader.Length];
        new IscsiHeader(header) { Opcode = opcode, Final = true, InitiatorTaskTag = itt, DataSegmentLength = data.Length };
        bytes.AddRange(header);
        if (headerDigest)
        {
            bytes.AddRange(Digest(header));
        }

        if (data.Length > 0)
        {
            var padded = new byte[(data.Length + 3) & ~3];
            data.CopyTo(padded, 0);
            bytes.AddRange(padded);
            if (dataDigest)
            {
                bytes.AddRange(Digest(padded));
            }
        }

        return [.. bytes];
    }

    private static byte[] Digest(byte[] covered)
    {
        var d = new byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(d, IscsiDigest.Compute(covered));
        return d;
    }
}
