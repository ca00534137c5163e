using Hci.Core.Blocks;
using Hci.Core.Buffers;
using Hci.Core.Devices;
using Hci.Core.Devices.Decorators;
using Microsoft.Extensions.Time.Testing;

namespace Hci.Core.Tests;

public sealed class FaultAndDelayTests
{
    [Fact]
    public async Task AnErrorRuleFailsOnlyRequestsOverlappingItsRangeWithItsErrno()
    {
        await using var d = new FaultInjectionBlockDevice(new MemoryBlockDevice(1 << 20));
        var rule = d.Add(new FaultRule(FaultKind.Error, offset: 8192, length: 4096, operation: BlockOperation.Write, errno: Errno.ENOSPC));
        using var buffer = new AlignedBuffer(4096);
        await d.WriteAsync(4096, buffer.Memory);
        await d.WriteAsync(12288, buffer.Memory);
        var ex = await Assert.ThrowsAsync<BlockDeviceException>(() => d.WriteAsync(8192, buffer.Memory).AsTask());
        Assert.Equal(Errno.ENOSPC, ex.Errno);
        Assert.Equal(BlockError.Device, ex.Error);
        Assert.Equal(BlockOperation.Write, ex.Operation);
        Assert.Equal(8192, ex.Offset);
        Assert.Contains("ENOSPC", ex.Message);
        await d.ReadAsync(8192, buffer.Memory); // reads are not covered by the rule
        Assert.Equal(1, rule.Hits);
    }

    [Fact]
    public async Task ACountedRuleStopsAfterItsHitsAndRemovedRulesStopAtOnce()
    {
        await using var d = new FaultInjectionBlockDevice(new MemoryBlockDevice(1 << 20));
        var rule = d.Add(new FaultRule(FaultKind.Error, count: 2));
        using var buffer = new AlignedBuffer(4096);
        await Assert.ThrowsAsync<BlockDeviceException>(() => d.ReadAsync(0, buffer.Memory).AsTask());
        await Assert.ThrowsAsync<BlockDeviceException>(() => d.FlushAsync().AsTask());
        await d.ReadAsync(0, buffer.Memory);
        Assert.Equal(0, rule.Remaining);

        var forever = d.Add(new FaultRule(FaultKind.Error, errno: Errno.EIO));
        await Assert.ThrowsAsync<BlockDeviceException>(() => d.WriteAsync(0, buffer.Memory).AsTask());
        d.Remove(forever);
        await d.WriteAsync(0, buffer.Memory);
    }

    [Fact]
    public async Task ATornReadReturnsTheFirstHalfIntactAndZeroesAfter()
    {
        await using var d = new FaultInjectionBlockDevice(new MemoryBlockDevice(1 << 20));
        using var buffer = new AlignedBuffer(4 * 4096);
        buffer.Span.Fill(0xEE);
        await d.WriteAsync(0, buffer.Memory);
        d.Add(new FaultRule(FaultKind.TornRead, count: 1));
        buffer.Span.Clear();
        await d.ReadAsync(0, buffer.Memory);
        Assert.All(buffer.Span[..(2 * 4096)].ToArray(), b => Assert.Equal(0xEE, b));
        Assert.All(buffer.Span[(2 * 4096)..].ToArray(), b => Assert.Equal(0, b));
        await d.ReadAsync(0, buffer.Memory);
        Assert.All(buffer.Span.ToArray(), b => Assert.Equal(0xEE, b));
    }

    [Fact]
    public async Task ACorruptReadFlipsOneBitInEachBlockOfTheRuleRangeOnly()
    {
        await using var d = new FaultInjectionBlockDevice(new MemoryBlockDevice(1 << 20));
        using var buffer = new AlignedBuffer(4 * 4096);
        new Random(7).NextBytes(buffer.Span);
        var original = buffer.Span.ToArray();
        await d.WriteAsync(0, buffer.Memory);
        d.Add(new FaultRule(FaultKind.CorruptRead, offset: 4096, length: 8192));
        await d.ReadAsync(0, buffer.Memory);
        for (int block = 0; block < 4; block++)
        {
            int flipped = 0;
            for (int i = block * 4096; i < (block + 1) * 4096; i++)
            {
                flipped += System.Numerics.BitOperations.PopCount((uint)(buffer.Span[i] ^ original[i]));
            }

            Assert.Equal(block is 1 or 2 ? 1 : 0, flipped);
        }
    }

    [Fact]
    public async Task DelayHoldsCompletionsUntilTheVirtualClockReachesThem()
    {
        var clock = new FakeTimeProvider();
        await using var d = new DelayBlockDevice(new MemoryBlockDevice(1 << 20), TimeSpan.FromMilliseconds(5), TimeSpan.FromMilliseconds(10), clock);
        using var queue = d.CreateQueue(8);
        using var buffer = new AlignedBuffer(4096);
        using var read = new BlockRequest { Handler = new CompletionCounter() };
        using var write = new BlockRequest { Handler = new CompletionCounter() };
        unsafe
        {
            read.SetReadWrite(BlockOperation.Read, 0, buffer.Pointer, 4096);
            write.SetReadWrite(BlockOperation.Write, 4096, buffer.Pointer, 4096);
        }

        queue.Submit(read);
        queue.Submit(write);
        Assert.Equal(0, queue.Poll(0, 0));
        clock.Advance(TimeSpan.FromMilliseconds(4.9));
        Assert.Equal(0, queue.Poll(0, 0));
        clock.Advance(TimeSpan.FromMilliseconds(0.2));
        Assert.Equal(1, queue.Poll(0, 0));
        Assert.True(read.Succeeded);
        Assert.True(write.IsInFlight);
        clock.Advance(TimeSpan.FromMilliseconds(5));
        Assert.Equal(1, queue.Poll(0, 0));
        Assert.True(write.Succeeded);
    }

    [Fact]
    public async Task DelayOnTheRealClockAddsAtLeastItsDelay()
    {
        await using var d = new DelayBlockDevice(new MemoryBlockDevice(1 << 20), TimeSpan.FromMilliseconds(20), TimeSpan.Zero);
        using var buffer = new AlignedBuffer(4096);
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        await d.ReadAsync(0, buffer.Memory);
        Assert.True(System.Diagnostics.Stopwatch.GetElapsedTime(start) >= TimeSpan.FromMilliseconds(19));
    }
}
