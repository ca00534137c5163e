using Hci.Core.Blocks;
using Hci.Core.Buffers;
using Hci.Core.Devices;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

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
        var handler = new CompletionCounter();
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
    public void AQueueKeepsNoMoreAtTheDeviceThanTheDevicesOwnTags()
    {
        // Direct I/O on a file meets its file system's device's tags (nr_requests): past them io_uring would park each
        // request on a worker thread, so the scheduled queue holds the rest itself.
        string path = Path.Combine(Directory.Exists("/var/tmp") ? "/var/tmp" : Path.GetTempPath(), $"hci-tags-{Environment.ProcessId}.img");
        try
        {
            using var inner = BlockDevices.Open(new BlockDeviceOptions { Engine = BlockEngine.IoUring, Path = path, Size = 1 << 20 });
            int tags = inner.Geometry.DeviceQueueDepth;
            Assert.True(tags > 0, $"no queue depth read for the device under {path}");
            using var device = new ScheduledBlockDevice(inner, new SchedulerOptions { Kind = SchedulerKind.Hybrid }, ownsInner: false);
            using var deep = (ScheduledBlockQueue)device.CreateQueue(tags * 2);
            using var shallow = (ScheduledBlockQueue)device.CreateQueue(Math.Max(1, tags / 2));
            Assert.Equal(tags, deep.MaxAtDevice);
            Assert.Equal(Math.Max(1, tags / 2), shallow.MaxAtDevice);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void ALimitedTenantIsReportedThrottledAndItsRequestsStillComplete()
    {
        var options = new SchedulerOptions { Kind = SchedulerKind.Limits };
        options.Limits.Tenants[7] = new TenantLimits { Iops = 200, IopsBurst = 5 };
        using var device = new ScheduledBlockDevice(new MemoryBlockDevice(4 << 20), options);
        var queue = (ScheduledBlockQueue)device.CreateQueue(16);
        using var pool = new AlignedBufferPool(4096, 20);
        var handler = new CompletionCounter();

        // Time stands still while the 20 are submitted, however long the first run's JIT takes: no token comes back
        // in the meantime, so exactly the burst passes.
        queue.TestNowNs = queue.NowNs;
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
        Assert.Equal(15, queue.Waiting); // the burst of 5 went, the rest waits
        Assert.True(queue.IsThrottled(7));
        Assert.False(queue.IsThrottled(8));
        queue.TestNowNs = null; // time runs again: the rest go at 200 IOPS
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
}

public sealed class SchedulerOptionsBindingTests
{
    [Fact]
    public void OptionsFromDependencyInjectionChooseTheSchedulerAndAreValidatedAtStart()
    {
        // A real container (Microsoft.Extensions.DependencyInjection): the options are configured as a host would,
        // and the device is resolved with IOptions<SchedulerOptions> injected.
        static ServiceProvider Build(Action<SchedulerOptions> configure)
        {
            var services = new ServiceCollection();
            services.Configure(configure);
            services.AddSingleton(sp => new ScheduledBlockDevice(new MemoryBlockDevice(1 << 20), sp.GetRequiredService<IOptions<SchedulerOptions>>()));
            return services.BuildServiceProvider(new ServiceProviderOptions { ValidateOnBuild = true, ValidateScopes = true });
        }

        using (var provider = Build(o => o.Kind = SchedulerKind.MClock))
        {
            var device = provider.GetRequiredService<ScheduledBlockDevice>();
            Assert.Same(device, provider.GetRequiredService<ScheduledBlockDevice>());
            Assert.Equal(SchedulerKind.MClock, device.Options.Kind);
            using var queue = (ScheduledBlockQueue)device.CreateQueue(4);
            Assert.Equal("mclock", queue.Scheduler.Name);
        }

        using (var provider = Build(o =>
        {
            o.Kind = SchedulerKind.MClock;
            o.MClock.Tenants[1] = new MClockTenant { Weight = 0 };
        }))
        {
            var ex = Assert.Throws<ArgumentException>(() => provider.GetRequiredService<ScheduledBlockDevice>());
            Assert.Contains("weight must be positive", ex.Message);
        }
    }
}
