using Hci.Core.Blocks;
using Hci.Core.Buffers;
using Hci.Core.Devices;
using Hci.Core.Devices.Decorators;
using Hci.Core.Modules;

namespace Hci.Scheduling.Tests;

public sealed class CoalescingTests
{
    [Fact]
    public async Task AdjacentVmReadsReleasedTogetherReachTheDeviceAsOneRequestAndEachGetsItsOwnData()
    {
        var memory = new MemoryBlockDevice(1 << 20);
        var counting = new CountingDevice(memory);
        using var device = new ScheduledBlockDevice(counting, new SchedulerOptions { Kind = SchedulerKind.Hybrid });
        using var pool = new AlignedBufferPool(4096, 32);

        // Lay down a pattern: block i is filled with byte i.
        var fill = new AlignedBuffer(64 * 4096);
        for (int i = 0; i < 64; i++)
        {
            fill.Span.Slice(i * 4096, 4096).Fill((byte)i);
        }

        await device.WriteAsync(0, fill.Memory);
        counting.Count = 0;

        // Depth 2: the first two go at once, the rest wait and are released together when those complete.
        var queue = (ScheduledBlockQueue)device.CreateQueue(2);
        var handler = new CompletionCounter();
        var requests = new List<(BlockRequest Request, AlignedBuffer Buffer, int Block)>();
        int[] blocks = [3, 4, 5, 6, 7, 8, 9, 10, 20, 21, 40];
        foreach (int b in blocks)
        {
            var buffer = pool.Rent();
            var r = new BlockRequest { Handler = handler, Class = IoClass.Vm, Tenant = 2 };
            unsafe
            {
                r.SetReadWrite(BlockOperation.Read, b * 4096L, buffer.Pointer, 4096);
            }

            requests.Add((r, buffer, b));
        }

        // Submitted before any poll: the scheduler holds them until the queue pumps, then releases them in a row.
        foreach (var (r, _, _) in requests)
        {
            queue.Submit(r);
        }

        while (queue.InFlight > 0)
        {
            queue.Poll();
        }

        foreach (var (r, buffer, b) in requests)
        {
            Assert.True(r.Succeeded);
            Assert.Equal(4096, r.Result);
            Assert.All(buffer.Span.ToArray(), x => Assert.Equal((byte)b, x));
        }

        Assert.True(counting.Count < blocks.Length, $"{counting.Count} device requests for {blocks.Length} reads");
        Assert.True(queue.Coalesced >= 1);
        queue.Dispose();
    }

    [Fact]
    public void ContainerIoIsNeverMerged()
    {
        var counting = new CountingDevice(new MemoryBlockDevice(1 << 20));
        using var device = new ScheduledBlockDevice(counting, new SchedulerOptions { Kind = SchedulerKind.Hybrid });
        using var pool = new AlignedBufferPool(4096, 8);
        var queue = (ScheduledBlockQueue)device.CreateQueue(8);
        for (int i = 0; i < 8; i++)
        {
            var r = new BlockRequest { Handler = new CompletionCounter(), Class = IoClass.Container, Tenant = 1 };
            unsafe
            {
                r.SetReadWrite(BlockOperation.Read, i * 4096L, pool.Rent().Pointer, 4096);
            }

            queue.Submit(r);
        }

        while (queue.InFlight > 0)
        {
            queue.Poll();
        }

        Assert.Equal(8, counting.Count);
        Assert.Equal(0, queue.Coalesced);
        queue.Dispose();
    }

    /// <summary>Counts the requests that reach the device.</summary>
    private sealed class CountingDevice(BlockDevice inner) : BlockDeviceDecorator(inner, ownsInner: true)
    {
        public int Count;

        protected override BlockQueue CreateQueueCore(int depth) => new Queue(this, depth);

        private sealed class Queue(CountingDevice device, int depth) : DecoratorQueue(device, device.Inner, depth)
        {
            protected override void SubmitCore(BlockRequest request)
            {
                Interlocked.Increment(ref device.Count);
                Forward(request);
            }

            protected override int PollCore(int minCompletions, int timeoutMilliseconds)
            {
                int before = InFlight;
                InnerQueue.Poll(minCompletions, timeoutMilliseconds);
                return before - InFlight;
            }
        }
    }
}
