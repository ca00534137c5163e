using Hci.Core.Blocks;
using Hci.Core.Buffers;
using Hci.Core.Devices;

namespace Hci.Core.Tests.Blocks;

/// <summary>
/// BlockDevice.ReadAsync/WriteAsync take any memory, as a newcomer's code passes it: on a real io_uring file device
/// opened with O_DIRECT (the default options), where the kernel itself refuses unaligned buffers with EINVAL.
/// </summary>
public sealed class ConvenienceApiTests : IAsyncLifetime
{
    private const long Size = 8 << 20;
    private string _path = "";
    private BlockDevice _device = null!;

    public Task InitializeAsync()
    {
        _path = TempFiles.DirectIoPath();
        _device = BlockDevices.Open(new BlockDeviceOptions { Path = _path, Size = Size, Engine = BlockEngine.IoUring });
        Assert.Equal("io_uring", _device.Engine);
        Assert.True(_device.Geometry.BufferAlignment > 1, "the device must require aligned buffers (O_DIRECT) for these tests to mean anything");
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        await _device.DisposeAsync();
        File.Delete(_path);
    }

    [Fact]
    public async Task AnUnalignedByteArrayIsWrittenAndReadBackUnchanged()
    {
        var written = Pattern(4096, seed: 1);
        await _device.WriteAsync(4096, written);

        var read = new byte[4096];
        await _device.ReadAsync(4096, read);
        Assert.Equal(written, read);

        // The bytes are on the device where they were asked to go: read back through an aligned buffer too.
        using var aligned = new AlignedBuffer(4096);
        await _device.ReadAsync(4096, aligned.Memory);
        Assert.True(aligned.Span.SequenceEqual(written));
    }

    [Fact]
    public async Task AMemorySliceAtAnOddAddressIsWrittenAndReadBackUnchanged()
    {
        int lbs = _device.Geometry.LogicalBlockSize;
        var backing = new byte[(2 * lbs) + 3];
        var source = backing.AsMemory(1, 2 * lbs);
        Pattern(2 * lbs, seed: 2).CopyTo(source);
        await _device.WriteAsync(lbs * 3L, source);

        var readBacking = new byte[(2 * lbs) + 7];
        var destination = readBacking.AsMemory(3, 2 * lbs);
        await _device.ReadAsync(lbs * 3L, destination);
        Assert.True(destination.Span.SequenceEqual(source.Span));

        // Nothing around the destination slice was touched.
        Assert.Equal(0, readBacking[..3].Max());
        Assert.Equal(0, readBacking[(3 + (2 * lbs))..].Max());
    }

    [Fact]
    public async Task ALargeUnalignedBufferIsSplitIntoTransfersAndReadBackUnchanged()
    {
        const int length = 3 << 20; // three times the default maximum transfer
        Assert.True(length > _device.Geometry.MaxTransferBytes);
        var backing = new byte[length + 1];
        var source = backing.AsMemory(1, length);
        Pattern(length, seed: 3).CopyTo(source);
        await _device.WriteAsync(1 << 20, source);

        var read = new byte[length + 5];
        await _device.ReadAsync(1 << 20, read.AsMemory(5, length));
        Assert.True(read.AsSpan(5, length).SequenceEqual(source.Span));
    }

    [Fact]
    public async Task ALargeAlignedBufferIsSplitIntoTransfersAndReadBackUnchanged()
    {
        const int length = 3 << 20;
        using var buffer = new AlignedBuffer(length);
        var written = Pattern(length, seed: 4);
        written.CopyTo(buffer.Span);
        await _device.WriteAsync(0, buffer.Memory);

        buffer.Span.Clear();
        await _device.ReadAsync(0, buffer.Memory);
        Assert.True(buffer.Span.SequenceEqual(written));
    }

    [Fact]
    public async Task AnOffsetOrLengthThatIsNotAWholeNumberOfBlocksIsRefusedWithAnArgumentExceptionNamingTheBlockSize()
    {
        int lbs = _device.Geometry.LogicalBlockSize;
        var offset = await Assert.ThrowsAsync<ArgumentException>(() => _device.WriteAsync(100, new byte[lbs]).AsTask());
        Assert.Equal("offset", offset.ParamName);
        Assert.Contains($"logical block size of '{_device.Name}' ({lbs} bytes)", offset.Message);
        Assert.Contains("100", offset.Message);

        var length = await Assert.ThrowsAsync<ArgumentException>(() => _device.ReadAsync(0, new byte[lbs + 1]).AsTask());
        Assert.Equal("buffer", length.ParamName);
        Assert.Contains($"({lbs} bytes)", length.Message);

        // Refused before reaching the device: it still serves a good request.
        var ok = Pattern(lbs, seed: 5);
        await _device.WriteAsync(0, ok);
        var back = new byte[lbs];
        await _device.ReadAsync(0, back);
        Assert.Equal(ok, back);
    }

    [Fact]
    public async Task AnUnalignedReadPastTheEndIsStillRefusedByTheDeviceWithItsErrno()
    {
        var ex = await Assert.ThrowsAsync<BlockDeviceException>(() => _device.ReadAsync(Size, new byte[4096]).AsTask());
        Assert.Equal(BlockError.OutOfRange, ex.Error);
        Assert.Equal(Errno.ERANGE, ex.Errno);
    }

    [Fact]
    public async Task ALongUnalignedWriteRunningPastTheEndIsRefusedWholeAndWritesNothing()
    {
        // 3 MiB ending 1 MiB past the end, from an odd address: split into pieces, the first two would fit.
        var data = Pattern((3 << 20) + 1, seed: 11);
        var ex = await Assert.ThrowsAsync<BlockDeviceException>(() => _device.WriteAsync(Size - (2 << 20), data.AsMemory(1, 3 << 20)).AsTask());
        Assert.Equal(BlockError.OutOfRange, ex.Error);
        Assert.Equal(Errno.ERANGE, ex.Errno);

        var back = new byte[2 << 20];
        await _device.ReadAsync(Size - (2 << 20), back);
        Assert.All(back, b => Assert.Equal(0, b));
    }

    private static byte[] Pattern(int length, int seed)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }
}
