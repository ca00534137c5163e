using Hci.Transport.Iscsi;

namespace Hci.Transport.Tests;

/// <summary>The PDU writer lays out answers with their digests and padding, references large data without copying it, and is read back by the PDU reader.</summary>
public sealed unsafe class IscsiPduWriterTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void WhatTheWriterQueuesTheReaderFramesBackWithDigestsChecked(bool digests)
    {
        using var writer = new IscsiPduWriter(16 * 1024, 1 << 20) { HeaderDigest = digests, DataDigest = digests };
        using var reader = new IscsiPduReader(64 * 1024) { HeaderDigest = digests, DataDigest = digests, MaxDataSegmentLength = 16384 };
        var referenced = new byte[10_001];
        Random.Shared.NextBytes(referenced);
        Span<byte> header = stackalloc byte[IscsiHeader.Length];
        var nop = NopInPdu.Create(header);
        nop.InitiatorTaskTag = 1;
        Assert.True(writer.TryQueue(header, [1, 2, 3]));
        var dataIn = DataInPdu.Create(header);
        dataIn.InitiatorTaskTag = 2;
        dataIn.HasStatus = true;
        fixed (byte* d = referenced)
        {
            Assert.True(writer.TryQueue(header, d, referenced.Length, copy: false));
            var response = ScsiResponsePdu.Create(header);
            response.InitiatorTaskTag = 3;
            Assert.True(writer.TryQueue(header, default));
            long expected = 3 * (IscsiHeader.Length + (digests ? 4 : 0)) + 4 + 10_004 + (digests ? 8 : 0);
            Assert.Equal(expected, writer.PendingBytes);

            var wire = new byte[expected];
            Assert.Equal((int)expected, writer.Drain(wire));
            Assert.True(writer.IsEmpty);
            reader.Append(wire);
        }

        Assert.Equal(PduReadStatus.Pdu, reader.TryRead(out var first));
        Assert.Equal(IscsiOpcode.NopIn, new IscsiHeader(first.Header).Opcode);
        Assert.Equal(new byte[] { 1, 2, 3 }, first.Data.ToArray());
        Assert.Equal(PduReadStatus.Pdu, reader.TryRead(out var second));
        Assert.Equal(2u, new DataInPdu(second.Header).InitiatorTaskTag);
        Assert.True(second.DataDigestOk);
        Assert.Equal(referenced, second.Data.ToArray());
        Assert.Equal(PduReadStatus.Pdu, reader.TryRead(out var third));
        Assert.Equal(IscsiOpcode.ScsiResponse, new IscsiHeader(third.Header).Opcode);
        Assert.Equal(0, third.Data.Length);
    }

    [Fact]
    public void ReferencedDataIsNotCopiedSoItIsSentAsItIsAtFlushTime()
    {
        using var writer = new IscsiPduWriter(8192, 1 << 20);
        var buffer = new byte[4096];
        Span<byte> header = stackalloc byte[IscsiHeader.Length];
        DataInPdu.Create(header);
        fixed (byte* d = buffer)
        {
            Assert.True(writer.TryQueue(header, d, buffer.Length, copy: false));
            buffer[100] = 0xAB; // after queuing, before sending: the buffer is sent as it is then
            var wire = new byte[writer.PendingBytes];
            writer.Drain(wire);
            Assert.Equal(0xAB, wire[IscsiHeader.Length + 100]);
        }
    }

    [Fact]
    public void AnInitiatorThatDoesNotReadMeetsTheOutputBoundAndPartialSendsResumeWhereTheyStopped()
    {
        using var writer = new IscsiPduWriter(4096, 3 * 4096);
        Span<byte> header = stackalloc byte[IscsiHeader.Length];
        var payload = new byte[2000];
        int queued = 0;
        while (writer.TryQueue(header, payload))
        {
            queued++;
        }

        Assert.InRange(queued, 3, 6); // about one per half chunk, in at most three chunks
        var all = new byte[writer.PendingBytes];
        int taken = 0;
        while (!writer.IsEmpty)
        {
            taken += writer.Drain(all.AsSpan(taken, Math.Min(777, all.Length - taken))); // a socket that takes a little at a time
        }

        Assert.Equal(all.Length, taken);
        Assert.Equal(0, writer.PendingBytes);
        Assert.True(writer.TryQueue(header, payload)); // room again once sent
    }

    [Fact]
    public void DataLargerThanAChunkIsNeverCopied()
    {
        using var writer = new IscsiPduWriter(4096, 1 << 20);
        var header = new byte[IscsiHeader.Length];
        Assert.Throws<ArgumentOutOfRangeException>(() => writer.TryQueue(header, new byte[writer.MaxCopiedSegment + 1]));
    }
}
