using Hci.Core.Blocks;
using Hci.Core.Buffers;
using Hci.Core.Devices;

namespace Hci.Core.Tests;

public sealed class EngineAndOptionsTests
{
    [Fact]
    public async Task AutoChoosesIoUringWhereTheKernelAllowsIt()
    {
        Assert.True(BlockDevices.IsIoUringAvailable, BlockDevices.IoUringUnavailableReason);
        string path = TestDevice.TempPath();
        try
        {
            await using var d = BlockDevices.Open(new BlockDeviceOptions { Path = path, Size = 1 << 20 });
            Assert.Equal("io_uring", d.Engine);
            Assert.Equal(1 << 20, new FileInfo(path).Length);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Theory]
    [InlineData(BlockEngine.Memory, null, null, "positive Size")]
    [InlineData(BlockEngine.IoUring, null, 4096L, "need a Path")]
    [InlineData(BlockEngine.Null, null, -1L, "positive Size")]
    [InlineData(BlockEngine.Memory, null, 1000L, "multiple of the logical block size")]
    public void InvalidOptionsAreRefusedWithAMessageThatSaysWhatToFix(BlockEngine engine, string? path, long? size, string message)
    {
        var ex = Assert.Throws<ArgumentException>(() => BlockDevices.Open(new BlockDeviceOptions { Engine = engine, Path = path, Size = size }));
        Assert.Contains(message, ex.Message);
    }

    [Fact]
    public void AMissingFileWithoutASizeIsReportedByName()
    {
        string path = Path.Combine(Path.GetTempPath(), $"hci-missing-{Guid.NewGuid():N}");
        var ex = Assert.Throws<FileNotFoundException>(() => BlockDevices.Open(new BlockDeviceOptions { Path = path }));
        Assert.Contains(path, ex.Message);
        Assert.Contains("give a size", ex.Message);
    }

    [Fact]
    public async Task AnExistingFileIsOpenedAtItsOwnSizeAndKeepsItsData()
    {
        string path = TestDevice.TempPath();
        try
        {
            await using (var d = BlockDevices.Open(new BlockDeviceOptions { Path = path, Size = 64 << 10 }))
            {
                using var b = new AlignedBuffer(4096);
                b.Span.Fill(0x42);
                await d.WriteAsync(8192, b.Memory);
                await d.FlushAsync();
            }

            await using (var d = BlockDevices.Open(new BlockDeviceOptions { Path = path }))
            {
                Assert.Equal(64 << 10, d.Geometry.Capacity);
                using var b = new AlignedBuffer(4096);
                await d.ReadAsync(8192, b.Memory);
                Assert.All(b.Span.ToArray(), x => Assert.Equal(0x42, x));
            }

            await using (var d = BlockDevices.Open(new BlockDeviceOptions { Path = path, ReadOnly = true }))
            {
                Assert.True(d.Supports(BlockDeviceCapabilities.ReadOnly));
                using var b = new AlignedBuffer(4096);
                var ex = await Assert.ThrowsAsync<BlockDeviceException>(() => d.WriteAsync(0, b.Memory).AsTask());
                Assert.Equal(BlockError.ReadOnly, ex.Error);
                Assert.Equal(Errno.EROFS, ex.Errno);
            }
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public async Task RegisteredBuffersCarryIoOnIoUringQueues()
    {
        await using var t = TestDevice.Create(DeviceKind.IoUring);
        using var pool = new AlignedBufferPool(4096, 8);
        using var queue = t.Device.CreateQueue(8);
        Assert.True(queue.TryRegisterBuffers([pool.Slab]));
        Assert.False(queue.TryRegisterBuffers([pool.Slab])); // once per queue
        var b = pool.Rent();
        b.Span.Fill(0x77);
        using var r = new BlockRequest { Handler = new Nothing() };
        unsafe
        {
            r.SetReadWrite(BlockOperation.Write, 4096, b.Pointer, 4096);
        }

        queue.Submit(r);
        queue.Poll();
        Assert.True(r.Succeeded, $"{r.Error} {r.Errno}");
        var check = new AlignedBuffer(4096);
        await t.Device.ReadAsync(4096, check.Memory);
        Assert.All(check.Span.ToArray(), x => Assert.Equal(0x77, x));
    }

    [Fact]
    public void ThePoolIsBoundedAndRefusesDoubleReturns()
    {
        using var pool = new AlignedBufferPool(4096, 2);
        var a = pool.Rent();
        var b = pool.Rent();
        Assert.Null(pool.TryRent());
        Assert.Throws<InvalidOperationException>(() => pool.Rent());
        unsafe
        {
            Assert.Equal(0, (long)a.Pointer % 4096);
            Assert.Equal(0, (long)b.Pointer % 4096);
        }

        pool.Return(a);
        Assert.Throws<InvalidOperationException>(() => pool.Return(a));
        Assert.Equal(1, pool.Available);
        using var other = new AlignedBufferPool(4096, 1);
        Assert.Throws<ArgumentException>(() => other.Return(b));
    }

    private sealed class Nothing : IBlockCompletionHandler
    {
        public void OnCompleted(BlockRequest request)
        {
        }
    }
}

public sealed class QueueOwnershipTests
{
    [Theory]
    [MemberData(nameof(BlockDeviceContractTests.AllKinds), MemberType = typeof(BlockDeviceContractTests))]
    public async Task UsingAQueueFromASecondThreadIsRefusedBeforeAnythingChanges(DeviceKind kind)
    {
        await using var t = TestDevice.Create(kind);
        using var buffer = new Hci.Core.Buffers.AlignedBuffer(4096);
        var queue = t.Device.CreateQueue(4);
        var request = new Hci.Core.Blocks.BlockRequest { Handler = new Sink() };
        unsafe
        {
            request.SetReadWrite(Hci.Core.Blocks.BlockOperation.Read, 0, buffer.Pointer, 4096);
        }

        var owner = new Thread(() =>
        {
            queue.Submit(request);
            while (queue.InFlight > 0)
            {
                queue.Poll();
            }
        });
        owner.Start();
        owner.Join();
        Assert.True(request.Succeeded);

        Exception? second = null;
        var other = new Thread(() =>
        {
            try
            {
                queue.Submit(request);
            }
            catch (Exception ex)
            {
                second = ex;
            }
        });
        other.Start();
        other.Join();
        var error = Assert.IsType<InvalidOperationException>(second);
        Assert.Contains("one thread", error.Message);
        Assert.False(request.IsInFlight);
        Assert.Equal(0, queue.InFlight);
        queue.Dispose(); // nothing in flight: any thread may close it
        request.Dispose();
    }

    private sealed class Sink : Hci.Core.Blocks.IBlockCompletionHandler
    {
        public void OnCompleted(Hci.Core.Blocks.BlockRequest request)
        {
        }
    }
}
