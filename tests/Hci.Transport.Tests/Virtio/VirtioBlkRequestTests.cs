using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Hci.Transport.Virtio;

namespace Hci.Transport.Tests;

public sealed unsafe class VirtioBlkRequestTests : IDisposable
{
    private readonly byte* _mem = (byte*)NativeMemory.AllocZeroed(64 * 1024);

    public void Dispose() => NativeMemory.Free(_mem);

    private ChainSegment Header(uint type, ulong sector, int at = 0)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(new Span<byte>(_mem + at, 4), type);
        BinaryPrimitives.WriteUInt64LittleEndian(new Span<byte>(_mem + at + 8, 8), sector);
        return new ChainSegment((nint)(_mem + at), 16, false);
    }

    private ChainSegment Buf(int at, uint length, bool writable) => new((nint)(_mem + at), length, writable);

    [Fact]
    public void AReadHasItsSectorDataAndStatusPlace()
    {
        ChainSegment[] chain = [Header(VirtioBlk.TypeIn, 8), Buf(4096, 4096, true), Buf(8192, 1, true)];
        var data = new ChainSegment[8];
        Assert.Equal(VirtioBlkParseError.None, VirtioBlkRequest.Parse(chain, data, out var r));
        Assert.Equal(8UL, r.Sector);
        Assert.Equal(4096, r.DataLength);
        Assert.Equal(1, r.DataCount);
        Assert.Equal((nint)(_mem + 8192), r.Status);
    }

    [Fact]
    public void AHeaderSplitAcrossBuffersAndAStatusSharingTheDataBufferAreUnderstood()
    {
        Header(VirtioBlk.TypeIn, 3, at: 0);
        // 10 + 6 header bytes, then one buffer of 1024 data bytes and the status byte.
        ChainSegment[] chain = [Buf(0, 10, false), Buf(10, 6, false), Buf(4096, 1025, true)];
        var data = new ChainSegment[8];
        Assert.Equal(VirtioBlkParseError.None, VirtioBlkRequest.Parse(chain, data, out var r));
        Assert.Equal(3UL, r.Sector);
        Assert.Equal(1024, r.DataLength);
        Assert.Equal((nint)(_mem + 4096 + 1024), r.Status);

        // Header and write data in one readable buffer.
        Header(VirtioBlk.TypeOut, 5, at: 0);
        ChainSegment[] write = [Buf(0, 16 + 512, false), Buf(8192, 1, true)];
        Assert.Equal(VirtioBlkParseError.None, VirtioBlkRequest.Parse(write, data, out r));
        Assert.Equal(512, r.DataLength);
        Assert.Equal((nint)(_mem + 16), data[0].Address);
    }

    public static TheoryData<string, string, byte> Bad => new()
    {
        { "no-status", nameof(VirtioBlkParseError.NoStatus), VirtioBlk.StatusIoErr },
        { "short-header", nameof(VirtioBlkParseError.ShortHeader), VirtioBlk.StatusIoErr },
        { "unknown-type", nameof(VirtioBlkParseError.UnknownType), VirtioBlk.StatusUnsupported },
        { "read-into-readable", nameof(VirtioBlkParseError.WrongDirection), VirtioBlk.StatusIoErr },
        { "write-from-writable", nameof(VirtioBlkParseError.WrongDirection), VirtioBlk.StatusIoErr },
        { "partial-sector", nameof(VirtioBlkParseError.BadLength), VirtioBlk.StatusIoErr },
        { "discard-partial-range", nameof(VirtioBlkParseError.BadLength), VirtioBlk.StatusIoErr },
    };

    [Theory]
    [MemberData(nameof(Bad))]
    public void MalformedRequestsAreReportedWithTheStatusTheGuestGets(string kind, string expectedName, byte status)
    {
        var expected = Enum.Parse<VirtioBlkParseError>(expectedName); // the wire enum is internal: xUnit passes its name
        ChainSegment[] chain = kind switch
        {
            "no-status" => [Header(VirtioBlk.TypeIn, 0), Buf(4096, 512, false)],
            "short-header" => [Buf(0, 12, false), Buf(8192, 1, true)],
            "unknown-type" => [Header(77, 0), Buf(8192, 1, true)],
            "read-into-readable" => [Header(VirtioBlk.TypeIn, 0), Buf(4096, 512, false), Buf(8192, 1, true)],
            "write-from-writable" => [Header(VirtioBlk.TypeOut, 0), Buf(4096, 512, true), Buf(8192, 1, true)],
            "partial-sector" => [Header(VirtioBlk.TypeIn, 0), Buf(4096, 100, true), Buf(8192, 1, true)],
            "discard-partial-range" => [Header(VirtioBlk.TypeDiscard, 0), Buf(4096, 10, false), Buf(8192, 1, true)],
            _ => throw new ArgumentOutOfRangeException(nameof(kind)),
        };
        Assert.Equal(expected, VirtioBlkRequest.Parse(chain, new ChainSegment[8], out _));
        Assert.Equal(status, VirtioBlkRequest.StatusFor(expected));
    }

    [Fact]
    public void RandomChainsNeverThrowAndDataStaysInsideTheChain()
    {
        var rng = new Random(11);
        var chain = new ChainSegment[8];
        var data = new ChainSegment[8];
        for (int round = 0; round < 100_000; round++)
        {
            int n = rng.Next(0, 9);
            rng.NextBytes(new Span<byte>(_mem, 64));
            for (int i = 0; i < n; i++)
            {
                int at = rng.Next(0, 60 * 1024);
                chain[i] = new ChainSegment((nint)(_mem + at), (uint)rng.Next(1, 64 * 1024 - at), rng.Next(2) == 0);
            }

            var error = VirtioBlkRequest.Parse(chain.AsSpan(0, n), data, out var r);
            if (error == VirtioBlkParseError.None || r.DataCount > 0)
            {
                for (int i = 0; i < r.DataCount; i++)
                {
                    Assert.True(data[i].Address >= (nint)_mem && data[i].Address + data[i].Length <= (nint)(_mem + (64 * 1024)));
                }
            }
        }
    }
}
