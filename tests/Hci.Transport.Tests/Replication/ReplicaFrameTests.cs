using Hci.Core.Replication;
using Hci.Transport.Replication;

namespace Hci.Transport.Tests.Replication;

/// <summary>
/// The frame reader with no socket: boundary lengths and offsets are refused before anything is waited for, a valid
/// frame comes out whole however the bytes are split, and 100,000 hostile frames never throw, never read outside the
/// buffer and never make the reader wait for more than it can hold.
/// </summary>
public sealed unsafe class ReplicaFrameTests
{
    private static ReplicaFrameHeader Request(ReplicaOperation op, long offset, int length, long extent = 0) => new()
    {
        Kind = ReplicaFrameKind.Request,
        Operation = op,
        RequestId = 1,
        Extent = extent,
        Offset = offset,
        Length = length,
    };

    private static ReplicaReadStatus Peek(byte[] bytes, out ReplicaFrameError error)
    {
        using var reader = new ReplicaFrameReader(ReplicaGeometry.MaxTransfer);
        reader.Append(bytes);
        var status = reader.TryPeek(out _);
        error = reader.Error;
        return status;
    }

    [Theory]
    [InlineData(0L, ReplicaGeometry.MaxTransfer, true)]
    [InlineData(0L, ReplicaGeometry.MaxTransfer + 4096, false)]
    [InlineData(0L, ReplicaGeometry.MaxTransfer - 1, false)]
    [InlineData(0L, 1, false)]
    [InlineData(0L, -1, false)]
    [InlineData(0L, int.MinValue, false)]
    [InlineData(0L, int.MaxValue, false)]
    [InlineData(1L, 4096, false)]
    [InlineData(1L << 31, 4096, true)]
    [InlineData(1L << 32, 4096, true)]
    [InlineData(long.MaxValue - 4095, 4096, false)]
    [InlineData(-4096L, 4096, false)]
    [InlineData(long.MinValue, 0, false)]
    public void LengthsAndOffsetsOnTheBoundariesAreCheckedBeforeThePayloadIsAwaited(long offset, int length, bool accepted)
    {
        var hostile = new HostileFrames(1);
        byte[] header = new byte[ReplicaFrameHeader.Size];
        Request(ReplicaOperation.Write, offset, length).Write(header);
        var status = Peek(header, out var error);
        if (accepted)
        {
            Assert.Equal(ReplicaReadStatus.NeedMore, status); // a valid header: its payload is awaited
            Assert.Equal(ReplicaReadStatus.Frame, Peek(hostile.Frame(Request(ReplicaOperation.Write, offset, length), length), out _));
        }
        else
        {
            Assert.Equal(ReplicaReadStatus.Malformed, status);
            Assert.NotEqual(ReplicaFrameError.None, error);
        }
    }

    [Fact]
    public void ANegativeExtentAnUnknownOperationAndABadHeaderChecksumEndTheConnection()
    {
        byte[] header = new byte[ReplicaFrameHeader.Size];
        Request(ReplicaOperation.Read, 0, 4096, extent: -1).Write(header);
        Assert.Equal(ReplicaReadStatus.Malformed, Peek(header, out var e1));
        Assert.Equal(ReplicaFrameError.BadRange, e1);
        Request((ReplicaOperation)11, 0, 0).Write(header);
        Assert.Equal(ReplicaReadStatus.Malformed, Peek(header, out var e2));
        Assert.Equal(ReplicaFrameError.BadOperation, e2);
        Request(ReplicaOperation.Read, 0, 4096).Write(header);
        header[20] ^= 1;
        Assert.Equal(ReplicaReadStatus.Malformed, Peek(header, out var e3));
        Assert.Equal(ReplicaFrameError.BadHeaderChecksum, e3);
        var hello = new ReplicaFrameHeader { Kind = ReplicaFrameKind.Hello, Length = 40 };
        hello.Write(header);
        Assert.Equal(ReplicaReadStatus.Malformed, Peek(header, out var e4)); // a handshake frame after the handshake
        Assert.Equal(ReplicaFrameError.BadKind, e4);
    }

    [Fact]
    public void AFrameComesOutWholeHoweverItsBytesAreSplit()
    {
        var hostile = new HostileFrames(2);
        byte[] frame = hostile.Frame(Request(ReplicaOperation.Write, 8192, 3 * 4096), 3 * 4096);
        using var reader = new ReplicaFrameReader(ReplicaGeometry.MaxTransfer);
        for (int i = 0; i < frame.Length - 1; i += 997)
        {
            reader.Append(frame.AsSpan(i, Math.Min(997, frame.Length - 1 - i)));
            Assert.Equal(ReplicaReadStatus.NeedMore, reader.TryPeek(out _));
        }

        reader.Append(frame.AsSpan(frame.Length - 1));
        Assert.Equal(ReplicaReadStatus.Frame, reader.TryPeek(out var f));
        Assert.Equal(frame.Length, f.Size);
        Assert.Equal(3 * 4096, f.DataLength);
        Assert.True(f.DataIntact);
        reader.Consume(f);
        Assert.Equal(0, reader.Buffered);
    }

    [Fact]
    public void HundredThousandHostileFramesNeitherThrowNorOverrunTheBuffer()
    {
        var hostile = new HostileFrames(3);
        using var reader = new ReplicaFrameReader(ReplicaGeometry.MaxTransfer);
        int frames = 0;
        int malformed = 0;
        for (int i = 0; i < 100_000; i++)
        {
            byte[] bytes = hostile.Next();
            reader.Append(bytes);
            while (true)
            {
                var status = reader.TryPeek(out var frame);
                if (status == ReplicaReadStatus.Frame)
                {
                    Assert.InRange(frame.Size, ReplicaFrameHeader.Size, reader.Buffered);
                    Assert.InRange(frame.DataLength, 0, ReplicaGeometry.MaxTransfer);
                    _ = frame.DataIntact;
                    reader.Consume(frame);
                    frames++;
                    continue;
                }

                if (status == ReplicaReadStatus.Malformed)
                {
                    malformed++;
                    reader.Reset(); // the connection would end here
                }
                else if (reader.FreeBytes == 0 && reader.Buffered > 0)
                {
                    Assert.Fail("the reader waits for more than it can hold");
                }

                break;
            }

            if (i % 64 == 63)
            {
                reader.Reset(); // a new connection now and then, so that a header awaiting a large payload does not swallow the rest
            }
        }

        Assert.True(frames > 10_000, $"{frames} frames accepted");
        Assert.True(malformed > 10_000, $"{malformed} refused");
    }
}
