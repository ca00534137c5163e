using Hci.Core.Blocks;
using Hci.Core.Buffers;
using Hci.Core.Devices;

namespace Hci.Scheduling.Tests;

/// <summary>The live decorator: real queues and devices, every scheduler.</summary>
public sealed class ScheduledBlockDeviceTests
{
    public static TheoryData<SchedulerKind> Kinds => new(Enum.GetValues<SchedulerKind>());

    [Theory]
    [MemberData(nameof(Kinds))]
    public async Task WritesReadBackExactlyThroughEveryScheduler(SchedulerKind kind)
    {
        await using var device = new ScheduledBlockDevice(new MemoryBlockDevice(4 << 20), new SchedulerOptions { Kind = kind });
        var rng = new Random(5);
        var model = new byte[4 << 20];
        using var buffer = new AlignedBuffer(64 * 1024);
        for (int i = 0; i < 200; i++)
        {
            int blocks = rng.Next(1, 17);
            long offset = rng.Next(0, 1024 - blocks) * 4096L;
            int length = blocks * 4096;
            if (i % 3 == 2)
            {
                await device.ReadAsync(offset, buffer.Memory[..length]);
                Assert.True(buffer.Span[..length].SequenceEqual(model.AsSpan((int)offset, length)));
            }
            else
            {
                rng.NextBytes(buffer.Span[..length]);
                buffer.Span[..length].CopyTo(model.AsSpan((int)offset));
                await device.WriteAsync(offset, buffer.Memory[..length]);
            }
        }
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void ManyRequestsFromSeveralTenantsAllCompleteOnAQueue(SchedulerKind kind)
    {
        using var device = new ScheduledBlockDevice(new MemoryBlockDevice(4 << 20), new SchedulerOptions { Kind = kind });
        using var queue = device.CreateQueue(8);
        using var pool = new AlignedBufferPool(4096, 64);
        var handler = new Counter();
        var requests = new List<BlockRequest>();
        for (int i = 0; i < 64; i++)
        {
            var r = new BlockRequest { Handler = handler, Class = (IoClass)(i % 3), Tenant = i % 5 };
            unsafe
            {
                r.SetReadWrite(i % 2 == 0 ? BlockOperation.Write : BlockOperation.Read, i * 4096L, pool.Rent().Pointer, 4096);
            }

            requests.Add(r);
            queue.Submit(r);
        }

        while (queue.InFlight > 0)
        {
            queue.Poll();
        }

        Assert.Equal(64, handler.Count);
        Assert.All(requests, r => Assert.True(r.Succeeded));
    }

    [Fact]
    public void ALimitedTenantIsReportedThrottledAndItsRequestsStillComplete()
    {
        var options = new SchedulerOptions { Kind = SchedulerKind.Limits };
        options.Limits.Tenants[7] = new TenantLimits { Iops = 200, IopsBurst = 5 };
        using var device = new ScheduledBlockDevice(new MemoryBlockDevice(4 << 20), options);
        var queue = (ScheduledBlockQueue)device.CreateQueue(16);
        using var pool = new AlignedBufferPool(4096, 20);
        var handler = new Counter();
        for (int i = 0; i < 20; i++)
        {
            var r = new BlockRequest { Handler = handler, Tenant = 7 };
            unsafe
            {
                r.SetReadWrite(BlockOperation.Read, i * 4096L, pool.Rent().Pointer, 4096);
            }

            queue.Submit(r);
        }

        queue.Poll(0, 0);
        Assert.True(queue.Waiting >= 14, $"only the burst may pass at once; {queue.Waiting} wait");
        Assert.True(queue.IsThrottled(7));
        Assert.False(queue.IsThrottled(8));
        while (queue.InFlight > 0)
        {
            queue.Poll();
        }

        Assert.Equal(20, handler.Count);
        Assert.False(queue.IsThrottled(7));
        queue.Dispose();
    }

    [Fact]
    public void InvalidSchedulerOptionsAreRefusedAtStartWithWhatToFix()
    {
        var options = new SchedulerOptions { Kind = SchedulerKind.Hybrid };
        options.Hybrid.VmFloorIops = 0;
        var ex = Assert.Throws<ArgumentException>(() => new ScheduledBlockDevice(new MemoryBlockDevice(1 << 20), options));
        Assert.Contains("VmFloorIops must be positive", ex.Message);
    }

    private sealed class Counter : IBlockCompletionHandler
    {
        public int Count;

        public void OnCompleted(BlockRequest request) => Count++;
    }
}

public sealed class SchedulerOptionsBindingTests
{
    [Fact]
    public void OptionsFromDependencyInjectionChooseTheSchedulerAndAreValidatedAtStart()
    {
        var options = Microsoft.Extensions.Options.Options.Create(new SchedulerOptions { Kind = SchedulerKind.MClock });
        using var device = new ScheduledBlockDevice(new MemoryBlockDevice(1 << 20), options);
        using var queue = (ScheduledBlockQueue)device.CreateQueue(4);
        Assert.Equal("mclock", queue.Scheduler.Name);

        var bad = new SchedulerOptions { Kind = SchedulerKind.MClock };
        bad.MClock.Tenants[1] = new MClockTenant { Weight = 0 };
        var ex = Assert.Throws<ArgumentException>(() => new ScheduledBlockDevice(new MemoryBlockDevice(1 << 20), Microsoft.Extensions.Options.Options.Create(bad)));
        Assert.Contains("weight must be positive", ex.Message);
    }
}
