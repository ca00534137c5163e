using System.Buffers.Binary;
using Hci.Core.Blocks;
using Hci.Core.Buffers;
using Hci.Core.Devices;
using Hci.Core.Devices.Decorators;
using Hci.Transport.Scsi;

namespace Hci.Transport.Tests.Scsi;

/// <summary>
/// A device error reaches the initiator as the sense that says what went wrong: a failed write is a WRITE ERROR, not
/// an UNRECOVERED READ ERROR; a thin device out of space or a read-only one is DATA PROTECT; a range the device
/// refuses is ILLEGAL REQUEST. Driven through the unit on a device with injected faults, no transport.
/// </summary>
public sealed class ScsiDeviceErrorTests : IDisposable
{
    private const int BlockSize = 4096;

    private readonly MemoryBlockDevice _memory = new(1 << 20, BlockSize);
    private readonly FaultInjectionBlockDevice _device;
    private readonly ScsiDisk _disk;
    private readonly AlignedBuffer _buffer = new(BlockSize);

    public ScsiDeviceErrorTests()
    {
        _device = new FaultInjectionBlockDevice(_memory, ownsInner: false);
        _disk = new ScsiDisk(_device, "errors");
    }

    public void Dispose()
    {
        ((IDisposable)_buffer).Dispose();
        _device.Dispose();
        _memory.Dispose();
    }

    [Theory]
    [InlineData(false, Errno.EIO, SenseKey.MediumError, 0x11, 0x00)] // UNRECOVERED READ ERROR
    [InlineData(true, Errno.EIO, SenseKey.MediumError, 0x0C, 0x00)] // WRITE ERROR
    [InlineData(true, Errno.ENOSPC, SenseKey.DataProtect, 0x27, 0x07)] // SPACE ALLOCATION FAILED WRITE PROTECT
    [InlineData(true, Errno.EROFS, SenseKey.DataProtect, 0x27, 0x00)] // WRITE PROTECTED
    [InlineData(false, Errno.EINVAL, SenseKey.IllegalRequest, 0x21, 0x00)] // LBA OUT OF RANGE
    [InlineData(true, Errno.ERANGE, SenseKey.IllegalRequest, 0x21, 0x00)]
    public async Task ADeviceErrorOnTheSlowPathIsReportedWithTheSenseForItsErrnoAndOperation(bool write, int errno, byte key, byte asc, byte ascq)
    {
        // VERIFY and WRITE AND VERIFY run only on the slow path (ExecuteAsync), where the device throws.
        _device.Add(new FaultRule(FaultKind.Error, operation: write ? BlockOperation.Write : BlockOperation.Read, errno: errno));
        var task = new ScsiTask { ExpectedLength = BlockSize, Buffer = _buffer, DataOut = write };
        byte[] cdb = [write ? ScsiOpcode.WriteAndVerify10 : ScsiOpcode.Read10, 0, 0, 0, 0, 4, 0, 0, 1, 0];
        cdb.CopyTo(task.Cdb, 0);
        await _disk.ExecuteAsync(task);
        Assert.Equal(ScsiStatus.CheckCondition, task.Status);
        Assert.Equal(key, task.Sense[2] & 0x0F);
        Assert.Equal((asc, ascq), (task.Sense[12], task.Sense[13]));
    }

    [Fact]
    public async Task ASynchronizeCacheThatFailsIsAWriteErrorAndAnUnmapThatFailsForLackOfSpaceIsDataProtect()
    {
        _device.Add(new FaultRule(FaultKind.Error, operation: BlockOperation.Flush, errno: Errno.EIO));
        var sync = new ScsiTask();
        sync.Cdb[0] = ScsiOpcode.SynchronizeCache10;
        await _disk.ExecuteAsync(sync);
        Assert.Equal((SenseKey.MediumError, 0x0C), ((byte)(sync.Sense[2] & 0x0F), sync.Sense[12]));

        _device.Add(new FaultRule(FaultKind.Error, operation: BlockOperation.Discard, errno: Errno.ENOSPC));
        var unmap = new ScsiTask { ExpectedLength = 24, Buffer = _buffer, DataOut = true };
        unmap.Cdb[0] = ScsiOpcode.Unmap;
        unmap.Cdb[8] = 24;
        _buffer.Span[..24].Clear();
        BinaryPrimitives.WriteUInt16BigEndian(_buffer.Span[2..], 16);
        BinaryPrimitives.WriteUInt64BigEndian(_buffer.Span[8..], 4);
        BinaryPrimitives.WriteUInt32BigEndian(_buffer.Span[16..], 2);
        await _disk.ExecuteAsync(unmap);
        Assert.Equal((SenseKey.DataProtect, 0x27, 0x07), ((byte)(unmap.Sense[2] & 0x0F), unmap.Sense[12], unmap.Sense[13]));
    }

    [Theory]
    [InlineData(BlockOperation.Read, BlockError.Device, Errno.EIO, SenseKey.MediumError, 0x1100)]
    [InlineData(BlockOperation.WriteZeroes, BlockError.Device, Errno.EIO, SenseKey.MediumError, 0x0C00)]
    [InlineData(BlockOperation.Write, BlockError.ReadOnly, Errno.EROFS, SenseKey.DataProtect, 0x2700)]
    [InlineData(BlockOperation.Write, BlockError.OutOfRange, Errno.EINVAL, SenseKey.IllegalRequest, 0x2100)]
    [InlineData(BlockOperation.Read, BlockError.Misaligned, 0, SenseKey.IllegalRequest, 0x2400)]
    [InlineData(BlockOperation.Discard, BlockError.Unsupported, Errno.EOPNOTSUPP, SenseKey.IllegalRequest, 0x2000)]
    [InlineData(BlockOperation.Write, BlockError.Canceled, Errno.ECANCELED, SenseKey.AbortedCommand, 0x0000)]
    public void EachBlockErrorMapsToOneSense(BlockOperation operation, BlockError error, int errno, byte key, int sense)
    {
        Assert.Equal((key, (Asc)sense), ScsiDeviceErrors.SenseFor(operation, error, errno));
    }
    [Theory]
    [InlineData(true, Errno.ENOSPC, SenseKey.DataProtect, 0x27, 0x07)]
    [InlineData(true, Errno.EIO, SenseKey.MediumError, 0x0C, 0x00)]
    [InlineData(false, Errno.EIO, SenseKey.MediumError, 0x11, 0x00)]
    public unsafe void AFastPathRequestThatFailsIsReportedWithTheSenseForItsErrno(bool write, int errno, byte key, byte asc, byte ascq)
    {
        // The transport's own queue on the device, as iSCSI runs READ and WRITE: prepared, submitted, completed.
        _device.Add(new FaultRule(FaultKind.Error, operation: write ? BlockOperation.Write : BlockOperation.Read, errno: errno));
        var task = new ScsiTask { ExpectedLength = BlockSize, Buffer = _buffer, DataOut = write };
        byte[] cdb = [write ? ScsiOpcode.Write10 : ScsiOpcode.Read10, 0, 0, 0, 0, 4, 0, 0, 1, 0];
        cdb.CopyTo(task.Cdb, 0);
        Assert.Equal(ScsiFastPath.Submit, _disk.PrepareFast(task, out var operation, out long offset, out int length, out var flags));
        using var queue = _device.CreateQueue(4);
        using var request = new BlockRequest();
        var done = new Completions();
        request.SetReadWrite(operation, offset, _buffer.Pointer, length, flags);
        request.Handler = done;
        queue.Submit(request);
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (done.Count == 0 && DateTime.UtcNow < deadline)
        {
            queue.Poll(1, 100);
        }

        Assert.Equal(1, done.Count);
        _disk.CompleteFast(task, request);
        Assert.Equal(ScsiStatus.CheckCondition, task.Status);
        Assert.Equal((key, asc, ascq), ((byte)(task.Sense[2] & 0x0F), task.Sense[12], task.Sense[13]));
    }

    private sealed class Completions : IBlockCompletionHandler
    {
        public int Count { get; private set; }

        public void OnCompleted(BlockRequest request) => Count++;
    }
}
