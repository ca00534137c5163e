using Hci.Core.Blocks;
using Hci.Core.Buffers;
using Hci.Core.Devices;

namespace Hci.Core.Tests;

public sealed class EngineAndOptionsTests
{
    [Fact]
    public async Task AutoChoosesIoUringWhereTheKernelAllowsItAndFallsBackToTheFileEngineWithOneWarningWhereNot()
    {
        Assert.True(BlockDevices.IsIoUringAvailable, BlockDevices.IoUringUnavailableReason);
        string path = TempFiles.DirectIoPath();
        try
        {
            await using (var d = BlockDevices.Open(new BlockDeviceOptions { Path = path, Size = 1 << 20 }))
            {
                Assert.Equal("io_uring", d.Engine);
                Assert.Equal(1 << 20, new FileInfo(path).Length);
            }

            // The same options where the probe says io_uring cannot be used (as under seccomp or
            // kernel.io_uring_disabled): Auto opens the file engine and warns once, with the reason; asking for io_uring
            // by name is refused with the reason and the fix.
            var unavailable = Hci.Core.Native.IoUringSupport.Unavailable("io_uring is disabled by kernel.io_uring_disabled=2 (test)");
            var logs = new ListLoggerFactory();
            await using (var d = BlockDevices.OpenWithProbe(new BlockDeviceOptions { Path = path }, logs, unavailable))
            {
                Assert.Equal("file", d.Engine);
                using var b = new AlignedBuffer(4096);
                b.Span.Fill(0x3C);
                await d.WriteAsync(4096, b.Memory);
                b.Span.Clear();
                await d.ReadAsync(4096, b.Memory);
                Assert.True(b.Span.IndexOfAnyExcept((byte)0x3C) < 0);
            }

            await using (var d = BlockDevices.OpenWithProbe(new BlockDeviceOptions { Path = path }, logs, unavailable))
            {
                Assert.Equal("file", d.Engine);
            }

            var warning = Assert.Single(logs.Lines, l => l.Level == Microsoft.Extensions.Logging.LogLevel.Warning);
            Assert.Contains("kernel.io_uring_disabled=2 (test)", warning.Message);
            var ex = Assert.Throws<PlatformNotSupportedException>(() => BlockDevices.OpenWithProbe(new BlockDeviceOptions { Path = path, Engine = BlockEngine.IoUring }, logs, unavailable));
            Assert.Contains("kernel.io_uring_disabled=2 (test)", ex.Message);
            Assert.Contains("file engine", ex.Message);
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
        string path = TempFiles.DirectIoPath();
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
    public async Task RegisteredBuffersCarryIoOnIoUringQueuesAsFixedTransfers()
    {
        await using var t = CoreDevices.IoUring();
        using var pool = new AlignedBufferPool(4096, 8);
        using var queue = t.Device.CreateQueue(8);
        var uring = Assert.IsType<IoUringBlockQueue>(queue);
        Assert.True(queue.TryRegisterBuffers([pool.Slab]));
        Assert.False(queue.TryRegisterBuffers([pool.Slab])); // once per queue
        var b = pool.Rent();
        b.Span.Fill(0x77);
        using var r = new BlockRequest { Handler = new CompletionCounter() };
        unsafe
        {
            r.SetReadWrite(BlockOperation.Write, 4096, b.Pointer, 4096);
        }

        queue.Submit(r);
        Drain(queue);
        Assert.True(r.Succeeded, $"{r.Error} {r.Errno}");
        Assert.Equal(1, uring.FixedSubmissions); // WRITE_FIXED, not WRITE

        // A read into the registered slab is READ_FIXED; one into a buffer outside it is a plain READ.
        var into = pool.Rent();
        r.Reset();
        unsafe
        {
            r.SetReadWrite(BlockOperation.Read, 4096, into.Pointer, 4096);
        }

        queue.Submit(r);
        Drain(queue);
        Assert.True(r.Succeeded, $"{r.Error} {r.Errno}");
        Assert.Equal(2, uring.FixedSubmissions);
        Assert.True(into.Span.IndexOfAnyExcept((byte)0x77) < 0);

        using var outside = new AlignedBuffer(4096);
        r.Reset();
        unsafe
        {
            r.SetReadWrite(BlockOperation.Read, 4096, outside.Pointer, 4096);
        }

        queue.Submit(r);
        Drain(queue);
        Assert.True(r.Succeeded);
        Assert.Equal(2, uring.FixedSubmissions);
        Assert.True(outside.Span.IndexOfAnyExcept((byte)0x77) < 0);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task ShortTransfersAreResumedUntilTheWholeRequestIsDone(bool direct)
    {
        // The kernel really completes each submission short: the queue submits at most 4 KiB at a time (a seam), so
        // a 64 KiB write and read take 16 submissions each and must still move every byte to the right place.
        await using var t = CoreDevices.IoUring(direct: direct);
        using var queue = t.Device.CreateQueue(4);
        var uring = Assert.IsType<IoUringBlockQueue>(queue);
        uring.TestMaxSubmitBytes = 4096;
        using var data = new AlignedBuffer(64 << 10);
        new Random(11).NextBytes(data.Span);
        using var r = new BlockRequest { Handler = new CompletionCounter() };
        unsafe
        {
            r.SetReadWrite(BlockOperation.Write, 8192, data.Pointer, data.Length);
        }

        queue.Submit(r);
        Drain(queue);
        Assert.True(r.Succeeded, $"{r.Error} {r.Errno}");
        Assert.Equal(data.Length, r.Result);

        using var back = new AlignedBuffer(64 << 10);
        r.Reset();
        unsafe
        {
            r.SetReadWrite(BlockOperation.Read, 8192, back.Pointer, back.Length);
        }

        queue.Submit(r);
        Drain(queue);
        Assert.True(r.Succeeded, $"{r.Error} {r.Errno}");
        Assert.Equal(back.Length, r.Result);
        Assert.True(back.Span.SequenceEqual(data.Span), "a resumed short transfer moved the wrong bytes");

        // And through the device's own path, with the seam off, the file holds exactly that.
        using var check = new AlignedBuffer(64 << 10);
        await t.Device.ReadAsync(8192, check.Memory);
        Assert.True(check.Span.SequenceEqual(data.Span));
    }

    [Fact]
    public async Task EagainAndEintrCompletionsAreRetriedNotReported()
    {
        await using var t = CoreDevices.IoUring(direct: false);
        using var queue = t.Device.CreateQueue(8);
        var uring = Assert.IsType<IoUringBlockQueue>(queue);
        using var pool = new AlignedBufferPool(4096, 8);
        var handler = new CompletionCounter();
        var requests = new BlockRequest[8];
        unsafe
        {
            for (int i = 0; i < requests.Length; i++)
            {
                var b = pool.Rent();
                b.Span.Fill((byte)(i + 1));
                requests[i] = new BlockRequest { Handler = handler };
                requests[i].SetReadWrite(BlockOperation.Write, i * 4096L, b.Pointer, 4096);
            }
        }

        // The first 5 completions come back as -EAGAIN: each must be resubmitted, none delivered as a failure.
        uring.TestEagainCompletions = 5;
        foreach (var r in requests)
        {
            queue.Submit(r);
        }

        Drain(queue);
        Assert.Equal(0, uring.TestEagainCompletions);
        Assert.Equal(8, handler.Count);
        Assert.All(requests, r => Assert.True(r.Succeeded && r.Result == 4096, $"{r.Error} errno {r.Errno} result {r.Result}"));
        using var check = new AlignedBuffer(8 * 4096);
        await t.Device.ReadAsync(0, check.Memory);
        for (int i = 0; i < 8; i++)
        {
            Assert.True(check.Span.Slice(i * 4096, 4096).IndexOfAnyExcept((byte)(i + 1)) < 0, $"block {i}");
        }

        foreach (var r in requests)
        {
            r.Dispose();
        }
    }

    private static void Drain(BlockQueue queue)
    {
        var watch = System.Diagnostics.Stopwatch.StartNew();
        while (queue.InFlight > 0)
        {
            Assert.True(watch.Elapsed < TimeSpan.FromSeconds(30), "requests never completed");
            queue.Poll(1, 1000);
        }
    }

    private sealed class ListLoggerFactory : Microsoft.Extensions.Logging.ILoggerFactory
    {
        public System.Collections.Concurrent.ConcurrentQueue<(Microsoft.Extensions.Logging.LogLevel Level, string Message)> Lines { get; } = new();

        public void AddProvider(Microsoft.Extensions.Logging.ILoggerProvider provider)
        {
        }

        public Microsoft.Extensions.Logging.ILogger CreateLogger(string categoryName) => new Logger(this);

        public void Dispose()
        {
        }

        private sealed class Logger(ListLoggerFactory owner) : Microsoft.Extensions.Logging.ILogger
        {
            public IDisposable? BeginScope<TState>(TState state)
                where TState : notnull => null;

            public bool IsEnabled(Microsoft.Extensions.Logging.LogLevel logLevel) => true;

            public void Log<TState>(Microsoft.Extensions.Logging.LogLevel logLevel, Microsoft.Extensions.Logging.EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
                => owner.Lines.Enqueue((logLevel, formatter(state, exception)));
        }
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
}
