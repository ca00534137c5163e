using System.Diagnostics.Metrics;
using Hci.Core.Blocks;
using Hci.Core.Buffers;
using Hci.Core.Devices;

namespace Hci.Scheduling.Tests;

public sealed class SchedulingMetricsTests
{
    [Fact]
    public void DispatchesAreCountedPerClassAndTenantAndThrottledTimeIsRecorded()
    {
        var ios = new Dictionary<(string, int), long>();
        double throttledUs = 0;
        long queuedSamples = 0;

        // The meter is process-wide and other tests run in parallel: only measurements made on this
        // thread (the one that submits and polls the queue) belong to this test.
        int thread = Environment.CurrentManagedThreadId;
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == SchedulingMetrics.MeterName)
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
        {
            if (Environment.CurrentManagedThreadId != thread)
            {
                return;
            }

            if (instrument.Name == "hci.scheduler.ios")
            {
                string cls = "";
                int tenant = -1;
                foreach (var t in tags)
                {
                    if (t.Key == "hci.io.class")
                    {
                        cls = (string)t.Value!;
                    }
                    else if (t.Key == "hci.tenant")
                    {
                        tenant = (int)t.Value!;
                    }
                }

                lock (ios)
                {
                    ios[(cls, tenant)] = ios.GetValueOrDefault((cls, tenant)) + value;
                }
            }
        });
        listener.SetMeasurementEventCallback<double>((instrument, value, _, _) =>
        {
            if (Environment.CurrentManagedThreadId != thread)
            {
                return;
            }

            if (instrument.Name == "hci.scheduler.throttled")
            {
                throttledUs += value;
            }
            else if (instrument.Name == "hci.scheduler.queued")
            {
                queuedSamples++;
            }
        });
        listener.Start();

        var options = new SchedulerOptions { Kind = SchedulerKind.Limits };
        options.Limits.Tenants[7] = new TenantLimits { Iops = 500, IopsBurst = 2 };
        using var device = new ScheduledBlockDevice(new MemoryBlockDevice(1 << 20), options);
        using var queue = device.CreateQueue(16);
        using var pool = new AlignedBufferPool(4096, 16);
        var handler = new CompletionCounter();
        for (int i = 0; i < 16; i++)
        {
            var r = new BlockRequest { Handler = handler, Tenant = i < 8 ? 7 : 3, Class = i < 8 ? IoClass.Vm : IoClass.Container };
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

        Assert.Equal(8, ios[("vm", 7)]);
        Assert.Equal(8, ios[("container", 3)]);
        Assert.Equal(16, queuedSamples);
        Assert.True(throttledUs > 1000, $"tenant 7 waited behind its limit; throttled time {throttledUs:F0} us");
    }
}
