using System.Buffers.Binary;
using Hci.Core.Buffers;
using Hci.Core.Devices;
using Hci.Transport.Scsi;

namespace Hci.Transport.Tests.Scsi;

/// <summary>REPORT LUNS and the answers for an absent LUN, from the LUN map alone (no transport, no socket).</summary>
public sealed class ScsiLunMapTests : IDisposable
{
    private readonly MemoryBlockDevice _device = new(1 << 20, 4096);
    private readonly AlignedBuffer _buffer = new(4096);
    private readonly ScsiDisk _zero;
    private readonly ScsiDisk _five;
    private readonly ScsiLunMap _map;

    public ScsiLunMapTests()
    {
        _zero = new ScsiDisk(_device, "lun0");
        _five = new ScsiDisk(_device, "lun5");
        _map = new ScsiLunMap(new Dictionary<int, ScsiDisk> { [300] = _zero, [5] = _five, [0] = _zero });
    }

    public void Dispose()
    {
        ((IDisposable)_buffer).Dispose();
        _device.Dispose();
    }

    [Fact]
    public void ReportLunsListsEveryLunInOrderWithFlatSpaceAddressingAboveTwoHundredFiftyFive()
    {
        var task = Task([ScsiOpcode.ReportLuns, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], expected: 256);
        Assert.True(_map.TryAnswer(task, unit: null));
        Assert.Equal(ScsiStatus.Good, task.Status);
        Assert.Equal(32, task.DataLength);
        var d = _buffer.Span;
        Assert.Equal(24u, BinaryPrimitives.ReadUInt32BigEndian(d));
        Assert.Equal(0UL, BinaryPrimitives.ReadUInt64BigEndian(d[8..]));
        Assert.Equal(0x0005_0000_0000_0000UL, BinaryPrimitives.ReadUInt64BigEndian(d[16..]));
        Assert.Equal(0x412C_0000_0000_0000UL, BinaryPrimitives.ReadUInt64BigEndian(d[24..]));
    }

    [Fact]
    public void ReportLunsIsAnsweredWhicheverLunItIsSentToAndTruncatedToWhatTheInitiatorTakes()
    {
        _buffer.Span.Fill(0xEE);
        var task = Task([ScsiOpcode.ReportLuns, 0, 0, 0, 0, 0, 0, 0, 0, 12, 0, 0], expected: 12);
        Assert.True(_map.TryAnswer(task, _five));
        Assert.Equal(32, task.DataLength); // the residual tells the initiator how much there was
        Assert.Equal(24u, BinaryPrimitives.ReadUInt32BigEndian(_buffer.Span));
        Assert.Equal(0xEE, _buffer.Span[12]); // nothing past what it takes
    }

    [Fact]
    public void InquiryToAnAbsentLunAnswersPeripheralQualifierThreeAndOtherCommandsLogicalUnitNotSupported()
    {
        _buffer.Span.Fill(0xEE);
        var inquiry = Task([ScsiOpcode.Inquiry, 0, 0, 0, 96, 0], expected: 96);
        Assert.True(_map.TryAnswer(inquiry, _map.Find(7)));
        Assert.Equal(ScsiStatus.Good, inquiry.Status);
        Assert.Equal(36, inquiry.DataLength);
        Assert.Equal(0x7F, _buffer.Span[0]); // 011b, device type 1Fh
        Assert.Equal(-1, _buffer.Span[1..36].IndexOfAnyExcept((byte)0));

        foreach (byte op in new[] { ScsiOpcode.TestUnitReady, ScsiOpcode.Read10, ScsiOpcode.RequestSense })
        {
            var t = Task([op, 0, 0, 0, 0, 0, 0, 0, 0, 0], expected: 0);
            Assert.True(_map.TryAnswer(t, _map.Find(7)));
            Assert.Equal(ScsiStatus.CheckCondition, t.Status);
            Assert.Equal(SenseKey.IllegalRequest, t.Sense[2] & 0x0F);
            Assert.Equal((0x25, 0x00), (t.Sense[12], t.Sense[13]));
        }
    }

    [Fact]
    public void ACommandToAPresentLunIsLeftToItsUnit()
    {
        var t = Task([ScsiOpcode.Inquiry, 0, 0, 0, 96, 0], expected: 96);
        Assert.Same(_five, _map.Find(ScsiLunMap.Decode(ScsiLunMap.Encode(5))));
        Assert.False(_map.TryAnswer(t, _map.Find(5)));
    }

    [Theory]
    [InlineData(0x0000_0000_0000_0000UL, 0)]
    [InlineData(0x00FF_0000_0000_0000UL, 255)]
    [InlineData(0x412C_0000_0000_0000UL, 300)]
    [InlineData(0x7FFF_0000_0000_0000UL, 16383)]
    [InlineData(0x0100_0000_0000_0000UL, -1)] // peripheral addressing with a bus number
    [InlineData(0x8000_0000_0000_0000UL, -1)] // logical unit addressing
    [InlineData(0xC000_0000_0000_0000UL, -1)] // extended
    public void LunFieldsDecodeToTheirLunOrToNoneForAddressingMethodsNotServed(ulong field, int lun)
    {
        Assert.Equal(lun, ScsiLunMap.Decode(field));
        if (lun >= 0)
        {
            Assert.Equal(field, ScsiLunMap.Encode(lun));
        }
    }

    [Fact]
    public void LunsOutsideZeroToSixteenThousandThreeHundredEightyThreeAreRefused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new ScsiLunMap(new Dictionary<int, ScsiDisk> { [16384] = _zero }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new ScsiLunMap(new Dictionary<int, ScsiDisk> { [-1] = _zero }));
    }

    private ScsiTask Task(byte[] cdb, int expected)
    {
        var task = new ScsiTask { ExpectedLength = expected, Buffer = expected > 0 ? _buffer : null };
        cdb.CopyTo(task.Cdb, 0);
        return task;
    }
}
