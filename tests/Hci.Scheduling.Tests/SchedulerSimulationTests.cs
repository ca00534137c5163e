using Hci.Core.Blocks;
using Hci.Scheduling.Simulation;

namespace Hci.Scheduling.Tests;

/// <summary>Each scheduler's guarantees, proven on the deterministic simulator (virtual time: no timing noise).</summary>
public sealed class SchedulerSimulationTests
{
    private static readonly SimulatedDevice Ssd = new();
    private static readonly TimeSpan Seconds2 = TimeSpan.FromSeconds(2);
    private static readonly TimeSpan Warmup = TimeSpan.FromMilliseconds(100);

    private static SimulatedTenant Container(string name, int id, int qd) => new() { Name = name, Tenant = id, Class = IoClass.Container, QueueDepth = qd };

    private static SimulatedTenant Vm(string name, int id, int qd) => new() { Name = name, Tenant = id, Class = IoClass.Vm, QueueDepth = qd, VirtualizationCost = TimeSpan.FromMicroseconds(17) };

    [Fact]
    public void FifoSaturatesTheDeviceAtItsModelledRate()
    {
        var r = SchedulerSimulator.Run(new FifoScheduler<SimulatedIo>(), Ssd, [Container("c", 1, 128)], Seconds2, Warmup);
        Assert.InRange(r.DeviceIops, 460_000, 470_000); // 46 channels of 99 us
        Assert.InRange(r["c"].MeanLatencyUs, 270, 285);  // Little's law: 128 / 464.6K
    }

    [Fact]
    public void LimitsHoldEachTenantWithinTwoPercentOverTheLongRun()
    {
        var options = new LimitsSchedulerOptions();
        options.Tenants[1] = new TenantLimits { Iops = 50_000 };
        options.Tenants[2] = new TenantLimits { Iops = 20_000 };
        options.Tenants[3] = new TenantLimits { BytesPerSecond = 100e6 };
        var big = new SimulatedTenant { Name = "bw", Tenant = 3, QueueDepth = 32, IoSize = 64 * 1024 };
        var r = SchedulerSimulator.Run(new LimitsScheduler<SimulatedIo>(options), Ssd, [Vm("a", 1, 64), Vm("b", 2, 64), big, Container("free", 4, 16)], Seconds2, Warmup);
        Assert.InRange(r["a"].Iops, 49_000, 50_000 * 1.005);
        Assert.InRange(r["b"].Iops, 19_600, 20_000 * 1.005);
        Assert.InRange(r["bw"].Iops * 64 * 1024, 98e6, 100e6 * 1.005);
        Assert.True(r["free"].Iops > 100_000, "an unlimited tenant uses what the limited ones leave");
    }

    [Fact]
    public void LimitsNormalizeLargeIosSoThatBigRequestsCountAsSeveral()
    {
        var options = new LimitsSchedulerOptions { NormalizedIoSize = 32 * 1024 };
        options.Tenants[1] = new TenantLimits { Iops = 10_000 };
        var r = SchedulerSimulator.Run(new LimitsScheduler<SimulatedIo>(options), Ssd, [new SimulatedTenant { Name = "a", Tenant = 1, QueueDepth = 32, IoSize = 128 * 1024 }], Seconds2, Warmup);
        Assert.InRange(r["a"].Iops, 2_450, 2_500 * 1.005); // each 128 KiB I/O costs 4
    }

    [Fact]
    public void ABurstGoesAtOnceAfterAQuietSpellThenTheRateHolds()
    {
        var options = new LimitsSchedulerOptions();
        options.Tenants[1] = new TenantLimits { Iops = 1_000, IopsBurst = 500 };
        var r = SchedulerSimulator.Run(new LimitsScheduler<SimulatedIo>(options), Ssd, [Vm("a", 1, 1000)], TimeSpan.FromMilliseconds(10));
        Assert.InRange(r["a"].Completed, 500, 520); // 500 at once, then 1 per ms

        var longRun = SchedulerSimulator.Run(new LimitsScheduler<SimulatedIo>(options), Ssd, [Vm("a", 1, 1000)], Seconds2, TimeSpan.FromSeconds(1));
        Assert.InRange(longRun["a"].Iops, 980, 1_005);
    }

    [Fact]
    public void MClockMeetsReservationsWhenTheyFitAndSharesTheRestByWeight()
    {
        var options = new MClockSchedulerOptions();
        options.Tenants[1] = new MClockTenant { Reservation = 200_000, Weight = 1 };
        options.Tenants[2] = new MClockTenant { Reservation = 0, Weight = 1 };
        options.Tenants[3] = new MClockTenant { Reservation = 0, Weight = 3 };
        var r = SchedulerSimulator.Run(new MClockScheduler<SimulatedIo>(options), Ssd, [Vm("r", 1, 128), Vm("w1", 2, 128), Vm("w3", 3, 128)], Seconds2, Warmup);
        Assert.True(r["r"].Iops >= 200_000 * 0.99, $"reservation 200K, got {r["r"].Iops:F0}");
        double ratio = r["w3"].Iops / r["w1"].Iops;
        Assert.InRange(ratio, 3 * 0.95, 3 * 1.05);
    }

    [Fact]
    public void MClockWeightsAreProportionalWithinFivePercent()
    {
        var options = new MClockSchedulerOptions();
        options.Tenants[1] = new MClockTenant { Weight = 1 };
        options.Tenants[2] = new MClockTenant { Weight = 2 };
        options.Tenants[3] = new MClockTenant { Weight = 5 };
        var r = SchedulerSimulator.Run(new MClockScheduler<SimulatedIo>(options), Ssd, [Vm("a", 1, 128), Vm("b", 2, 128), Vm("c", 3, 128)], Seconds2, Warmup);
        Assert.InRange(r["b"].Iops / r["a"].Iops, 2 * 0.95, 2 * 1.05);
        Assert.InRange(r["c"].Iops / r["a"].Iops, 5 * 0.95, 5 * 1.05);
    }

    [Fact]
    public void MClockNeverLetsATenantPastItsLimit()
    {
        var options = new MClockSchedulerOptions();
        options.Tenants[1] = new MClockTenant { Weight = 10, Limit = 30_000 };
        options.Tenants[2] = new MClockTenant { Weight = 1 };
        var r = SchedulerSimulator.Run(new MClockScheduler<SimulatedIo>(options), Ssd, [Vm("capped", 1, 128), Vm("other", 2, 128)], Seconds2, Warmup);
        Assert.True(r["capped"].Iops <= 30_000 * 1.001, $"limit 30K, got {r["capped"].Iops:F0}");
        Assert.True(r["capped"].Iops >= 29_000);
        Assert.True(r["other"].Iops > 400_000, "the rest of the device goes to the other tenant");
    }

    [Fact]
    public void MClockRefusesAReservationAboveTheLimit()
    {
        var options = new MClockSchedulerOptions();
        options.Tenants[1] = new MClockTenant { Reservation = 10, Limit = 5 };
        var ex = Assert.Throws<ArgumentException>(() => new MClockScheduler<SimulatedIo>(options));
        Assert.Contains("cannot exceed the limit", ex.Message);
    }

    public static TheoryData<int> VmDepths => new() { 32, 64, 128 };

    [Theory]
    [MemberData(nameof(VmDepths))]
    public void HybridKeepsTheContainerAtNinetyFivePercentOfSoloWhileVmsKeepTheirFloorAndDelayBound(int vmDepth)
    {
        var options = new HybridSchedulerOptions();
        var solo = SchedulerSimulator.Run(new HybridScheduler<SimulatedIo>(options), Ssd, [Container("c", 1, 128)], Seconds2, Warmup);
        var together = SchedulerSimulator.Run(new HybridScheduler<SimulatedIo>(options), Ssd, [Container("c", 1, 128), Vm("vm1", 2, vmDepth), Vm("vm2", 3, vmDepth)], Seconds2, Warmup);
        var fifo = SchedulerSimulator.Run(new FifoScheduler<SimulatedIo>(), Ssd, [Container("c", 1, 128), Vm("vm1", 2, vmDepth), Vm("vm2", 3, vmDepth)], Seconds2, Warmup);

        Assert.True(together["c"].Iops >= 0.95 * solo["c"].Iops, $"container {together["c"].Iops:F0} vs solo {solo["c"].Iops:F0}");
        Assert.True(fifo["c"].Iops < 0.9 * solo["c"].Iops, $"under FIFO the container loses more: {fifo["c"].Iops:F0} vs solo {solo["c"].Iops:F0}");
        double boundUs = options.MaxAddedDelay.TotalMicroseconds + Ssd.ReadTime.TotalMicroseconds; // one service time to free a channel
        foreach (var vm in new[] { "vm1", "vm2" })
        {
            Assert.True(together[vm].Iops >= options.VmFloorIops * 0.98, $"{vm} {together[vm].Iops:F0} IOPS under its floor");
            Assert.True(together[vm].MaxSchedulerDelayUs <= boundUs, $"{vm} waited {together[vm].MaxSchedulerDelayUs:F0} us, bound {boundUs:F0}");
        }
    }

    private static (SimulationResult Solo, SimulationResult Hybrid, SimulationResult Fifo) ContainerAgainstVm(int depth)
    {
        // hci-bench contention's shape: one container and one VM, each at the same depth, on one device.
        var options = new HybridSchedulerOptions();
        var solo = SchedulerSimulator.Run(new HybridScheduler<SimulatedIo>(options), Ssd, [Container("c", 1, depth)], Seconds2, Warmup);
        var hybrid = SchedulerSimulator.Run(new HybridScheduler<SimulatedIo>(options), Ssd, [Container("c", 1, depth), Vm("vm", 2, depth)], Seconds2, Warmup);
        var fifo = SchedulerSimulator.Run(new FifoScheduler<SimulatedIo>(), Ssd, [Container("c", 1, depth), Vm("vm", 2, depth)], Seconds2, Warmup);
        return (solo, hybrid, fifo);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    [InlineData(8)]
    [InlineData(16)]
    [InlineData(32)]
    [InlineData(64)]
    [InlineData(128)]
    public void HybridKeepsTheContainerAtNinetyFivePercentOfSoloAgainstAVmAtEveryDepth(int depth)
    {
        var (solo, hybrid, _) = ContainerAgainstVm(depth);
        Assert.True(hybrid["c"].Iops >= 0.95 * solo["c"].Iops, $"QD{depth}: container {hybrid["c"].Iops:F0} vs solo {solo["c"].Iops:F0}");
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    [InlineData(8)]
    [InlineData(16)]
    [InlineData(32)]
    [InlineData(64)]
    [InlineData(128)]
    public void HybridKeepsTheDevicesTotalAtNinetyPercentOfFifosAgainstAVmAtEveryDepth(int depth)
    {
        var (_, hybrid, fifo) = ContainerAgainstVm(depth);
        Assert.True(hybrid.DeviceIops >= 0.9 * fifo.DeviceIops, $"QD{depth}: total {hybrid.DeviceIops:F0} vs FIFO's {fifo.DeviceIops:F0}");
    }

    [Fact]
    public void HybridIsWorkConservingWhenContainersAreIdle()
    {
        SimulatedTenant[] vms = [Vm("vm1", 2, 64), Vm("vm2", 3, 64)];
        var hybrid = SchedulerSimulator.Run(new HybridScheduler<SimulatedIo>(new HybridSchedulerOptions()), Ssd, vms, Seconds2, Warmup);
        var fifo = SchedulerSimulator.Run(new FifoScheduler<SimulatedIo>(), Ssd, vms, Seconds2, Warmup);
        Assert.InRange(hybrid["vm1"].Iops + hybrid["vm2"].Iops, 0.99 * (fifo["vm1"].Iops + fifo["vm2"].Iops), 1.01 * (fifo["vm1"].Iops + fifo["vm2"].Iops));
    }

    [Fact]
    public void HybridGivesBackgroundWorkItsFloorEvenUnderFullLoad()
    {
        var options = new HybridSchedulerOptions { BackgroundFloorIops = 500 };
        var scrub = new SimulatedTenant { Name = "scrub", Tenant = 9, Class = IoClass.Background, QueueDepth = 4 };
        var r = SchedulerSimulator.Run(new HybridScheduler<SimulatedIo>(options), Ssd, [Container("c", 1, 128), Vm("vm", 2, 64), scrub], Seconds2, Warmup);
        Assert.True(r["scrub"].Iops >= 500 * 0.98, $"background got {r["scrub"].Iops:F0}");
        Assert.True(r["vm"].Iops >= options.VmFloorIops * 0.98);
    }

    [Fact]
    public void HybridReleasesThrottledVmIoInBatches()
    {
        var scheduler = new HybridScheduler<SimulatedIo>(new HybridSchedulerOptions { VmBatchSize = 8 });
        var r = SchedulerSimulator.Run(scheduler, Ssd, [Container("c", 1, 128), Vm("vm", 2, 64)], Seconds2, Warmup);
        long batches = scheduler.BatchesReleased(2);
        Assert.True(batches > 0);
        Assert.True(r["vm"].Completed / (double)batches >= 4, $"{r["vm"].Completed} I/Os in {batches} batches");
    }

    [Fact]
    public void HybridCountsEachReleasedVmBatchOnTheMeterWithItsTenant()
    {
        // The meter is process-wide and other tests run in parallel: only this thread's measurements (the simulator
        // runs on the calling thread) belong to this test.
        int thread = Environment.CurrentManagedThreadId;
        var byTenant = new Dictionary<int, long>();
        using var listener = new System.Diagnostics.Metrics.MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == SchedulingMetrics.MeterName && instrument.Name == "hci.scheduler.batches")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
        {
            if (Environment.CurrentManagedThreadId != thread)
            {
                return;
            }

            foreach (var t in tags)
            {
                if (t.Key == "hci.tenant")
                {
                    byTenant[(int)t.Value!] = byTenant.GetValueOrDefault((int)t.Value!) + value;
                }
            }
        });
        listener.Start();

        var scheduler = new HybridScheduler<SimulatedIo>(new HybridSchedulerOptions { VmBatchSize = 8 });
        SchedulerSimulator.Run(scheduler, Ssd, [Container("c", 1, 128), Vm("vm1", 2, 64), Vm("vm2", 3, 64)], Seconds2, Warmup);

        Assert.True(scheduler.BatchesReleased(2) > 0);
        Assert.Equal(scheduler.BatchesReleased(2), byTenant.GetValueOrDefault(2));
        Assert.Equal(scheduler.BatchesReleased(3), byTenant.GetValueOrDefault(3));
        Assert.False(byTenant.ContainsKey(1), "the container is never batched");
    }

    [Fact]
    public void HybridGivesThrottledVmsTheirShareOfTheDevicesRate()
    {
        // Floors far below the share and a delay bound that never fires: while the container presses, the VMs
        // together get VmShareWhenPressed of the device's measured rate. Five times the share, five times the rate.
        static double VmIops(double share)
        {
            var options = new HybridSchedulerOptions { VmShareWhenPressed = share, VmFloorIops = 100, MaxAddedDelay = TimeSpan.FromSeconds(10) };
            var r = SchedulerSimulator.Run(new HybridScheduler<SimulatedIo>(options), Ssd, [Container("c", 1, 128), Vm("vm1", 2, 64), Vm("vm2", 3, 64)], Seconds2, Warmup);
            double vms = r["vm1"].Iops + r["vm2"].Iops;
            Assert.InRange(vms / r.DeviceIops, share * 0.8, share * 1.25);
            Assert.InRange(r["vm1"].Iops / r["vm2"].Iops, 0.8, 1.25); // split evenly between the busy VMs
            return vms;
        }

        double small = VmIops(0.02);
        double large = VmIops(0.10);
        Assert.InRange(large / small, 4, 6);
    }

    [Theory]
    [InlineData(0.0, 64, 64, 10)] // the containers' latency does not depend on the VMs: the window opens to every VM I/O waiting
    [InlineData(0.01, 1, 4, 10)] // each VM I/O at the device costs the containers 1%: the window stays near the 3% tolerance
    [InlineData(0.10, 1, 1, 10)] // each costs 10%: the window shuts, and opens to one at a time between measurements
    [InlineData(0.0, 64, 64, 1000)] // a light container (1000 IOPS): the window opens within a second too
    public void HybridOpensIdleSlotsToVmsAsFarAsTheContainersLatencyAllows(double costPerVmIo, int atLeast, int atMost, int stepUs)
    {
        // VMs get no share and no floor to speak of, so every VM I/O that reaches the device went through the slack
        // window. A container I/O completes every step (10 us, or 1 ms for a light container) with a latency of
        // 100 us, plus costPerVmIo for every VM I/O at the device; VM I/Os complete after one step and 64 wait at all
        // times. What the VMs got is read over the second half.
        var options = new HybridSchedulerOptions { VmFloorIops = 1, VmShareWhenPressed = 0, VmBatchSize = 1, MaxAddedDelay = TimeSpan.FromSeconds(100) };
        var s = new HybridScheduler<object>(options);
        var item = new object();
        var atDevice = new Queue<IoDescriptor>();
        int waiting = 0;
        long now = 1_000_000_000;
        int mostAtDevice = 0;
        double latencySum = 0;
        int latencyCount = 0;
        int steps = stepUs == 10 ? 200_000 : 2_000;
        for (int step = 0; step < steps; step++, now += stepUs * 1000L)
        {
            int vmsBeside = atDevice.Count; // at the device beside the container I/O that completes in this step
            while (atDevice.Count > 0)
            {
                s.OnCompleted(atDevice.Dequeue(), now);
            }

            for (; waiting < 64; waiting++)
            {
                s.Enqueue(item, new IoDescriptor(IoClass.Vm, 7, BlockOperation.Read, 0, 4096, now));
            }

            long latency = (long)(100_000 * (1 + (costPerVmIo * vmsBeside)));
            var container = new IoDescriptor(IoClass.Container, 1, BlockOperation.Read, 0, 4096, now - latency);
            s.Enqueue(item, container);
            while (s.TryDequeue(now, out _, out var io))
            {
                if (io.Class == IoClass.Vm)
                {
                    atDevice.Enqueue(io);
                    waiting--;
                }
            }

            if (step >= steps / 2)
            {
                mostAtDevice = Math.Max(mostAtDevice, atDevice.Count);
                latencySum += latency;
                latencyCount++;
            }

            s.OnCompleted(container, now);
        }

        Assert.InRange(mostAtDevice, atLeast, atMost);
        if (costPerVmIo > 0)
        {
            double rise = (latencySum / latencyCount / 100_000) - 1;
            Assert.True(rise <= options.ContainerLatencyTolerance, $"the containers' latency rose {rise:P1} on average, tolerance {options.ContainerLatencyTolerance:P0}");
        }
    }

    [Fact]
    public void HybridNeverSaysNowWhileItGivesNothingWithTheSlackWindowInPlay()
    {
        // A reactor sleeps until NextEligibleNs: "now" with nothing to give is a busy loop. Containers press and
        // complete steadily (so the slack window opens and moves), VMs keep a few I/Os waiting, fewer than a batch,
        // and VM I/Os at the device complete a few steps later, so the window is at times full and at times not.
        var options = new HybridSchedulerOptions { VmFloorIops = 20_000, VmBatchSize = 8 };
        var s = new HybridScheduler<object>(options);
        var item = new object();
        var vmsAtDevice = new Queue<(IoDescriptor Io, long DoneAt)>();
        int vmWaiting = 0;
        int spins = 0;
        int widest = 0;
        long now = 1_000_000_000;
        for (int step = 0; step < 100_000; step++, now += 10_000)
        {
            widest = Math.Max(widest, s.VmSlackWindow);
            while (vmsAtDevice.Count > 0 && vmsAtDevice.Peek().DoneAt <= now)
            {
                s.OnCompleted(vmsAtDevice.Dequeue().Io, now);
            }

            for (; vmWaiting < 1 + (step % 5); vmWaiting++)
            {
                s.Enqueue(item, new IoDescriptor(IoClass.Vm, 7 + (vmWaiting % 2), BlockOperation.Read, 0, 4096, now));
            }

            var container = new IoDescriptor(IoClass.Container, 1, BlockOperation.Read, 0, 4096, now - 100_000);
            s.Enqueue(item, container);
            s.Enqueue(item, container);
            while (s.TryDequeue(now, out _, out var io))
            {
                if (io.Class == IoClass.Vm)
                {
                    vmsAtDevice.Enqueue((io, now + (30_000 * (1 + (step % 3)))));
                    vmWaiting--;
                }
            }

            if (s.Count > 0 && s.NextEligibleNs(now) <= now)
            {
                spins++;
            }

            s.OnCompleted(container, now);
            s.OnCompleted(container, now);
        }

        Assert.True(widest >= 4, $"the slack window opened to {widest} at most: the test proves little");
        Assert.Equal(0, spins);
    }

    [Theory]
    [InlineData(200, 500, true)] // slow containers over the threshold press at depth 1
    [InlineData(200, 50, false)] // fast ones do not
    [InlineData(0, 500, false)] // no threshold: depth alone decides
    public void HybridLatencyThresholdMakesAShallowContainerPressWhenItsLatencyRises(int thresholdUs, int latencyUs, bool presses)
    {
        // Depth 1, far under the pressure depth: only the containers' latency (a moving average of completions)
        // can make them press, and only where a threshold is set.
        var s = new HybridScheduler<object>(new HybridSchedulerOptions { ContainerPressureDepth = 64, ContainerLatencyThreshold = TimeSpan.FromMicroseconds(thresholdUs) });
        long now = 1_000_000_000;
        for (int i = 0; i < 100; i++, now += 1_000_000)
        {
            var done = new IoDescriptor(IoClass.Container, 1, BlockOperation.Read, 0, 4096, now - (latencyUs * 1000L));
            s.Enqueue(new object(), done);
            Assert.True(s.TryDequeue(now, out _, out _));
            s.OnCompleted(done, now);
        }

        Assert.False(s.ContainersPressing(now + 10_000_000), "no container I/O outstanding: nothing presses");
        now += 10_000_000;
        s.Enqueue(new object(), new IoDescriptor(IoClass.Container, 1, BlockOperation.Read, 0, 4096, now));
        Assert.Equal(presses, s.ContainersPressing(now));

        // And what pressing means: a VM with more waiting than its floor allows is throttled.
        for (int i = 0; i < 16; i++)
        {
            s.Enqueue(new object(), new IoDescriptor(IoClass.Vm, 7, BlockOperation.Read, 0, 4096, now));
        }

        int vmReleased = 0;
        while (s.TryDequeue(now, out _, out var io))
        {
            vmReleased += io.Class == IoClass.Vm ? 1 : 0;
        }

        Assert.Equal(presses, s.IsThrottled(7, now));
        Assert.True(presses ? vmReleased < 16 : vmReleased == 16, $"{vmReleased} of 16 VM I/Os released");
    }

    [Fact]
    public void HybridIsThrottledOnlyForVmsWhileContainersPressAndUntilTheHoldEnds()
    {
        var options = new HybridSchedulerOptions { ContainerPressureDepth = 2, PressureHold = TimeSpan.FromMilliseconds(2), VmFloorIops = 1000, VmBatchSize = 1, MaxAddedDelay = TimeSpan.FromSeconds(1) };
        var s = new HybridScheduler<object>(options);
        long now = 1_000_000_000;
        var vm = new IoDescriptor(IoClass.Vm, 7, BlockOperation.Read, 0, 4096, now);
        var container = new IoDescriptor(IoClass.Container, 1, BlockOperation.Read, 0, 4096, now);
        for (int i = 0; i < 16; i++)
        {
            s.Enqueue(new object(), vm);
        }

        // No container I/O: nobody is throttled, and the VM's I/O goes.
        Assert.False(s.IsThrottled(7, now), "throttled with no container I/O");
        Assert.True(s.TryDequeue(now, out _, out _), "the VM's I/O did not go");

        // Two container I/Os outstanding: containers press; once the VM spent what its bucket holds it is throttled.
        s.Enqueue(new object(), container);
        s.Enqueue(new object(), container);
        Assert.True(s.ContainersPressing(now), "two container I/Os at depth 2 do not press");
        int released = 0;
        while (!s.IsThrottled(7, now))
        {
            Assert.True(s.TryDequeue(now, out _, out var io));
            if (io.Class == IoClass.Vm)
            {
                released++;
            }

            Assert.True(released < 16, "the VM was never throttled while containers pressed");
        }

        Assert.False(s.IsThrottled(1, now)); // a container tenant is never throttled
        Assert.False(s.IsThrottled(8, now)); // nor a tenant with no I/O

        // At the floor (1000 IOPS, one I/O per ms), 1 ms later one more VM I/O goes (ahead of the containers),
        // then the VM is throttled again.
        long t = now + 1_000_000;
        Assert.False(s.IsThrottled(7, t), "the floor's next token did not come");
        Assert.True(s.TryDequeue(t, out _, out var next));
        Assert.Equal(IoClass.Vm, next.Class);
        Assert.True(s.IsThrottled(7, t), "not throttled after spending the floor's token");

        // The containers go and finish; the pressure holds for PressureHold (2 ms), then the VM is free again.
        Assert.True(s.TryDequeue(t, out _, out var c1) && c1.Class == IoClass.Container);
        Assert.True(s.TryDequeue(t, out _, out var c2) && c2.Class == IoClass.Container);
        s.OnCompleted(container, t);
        s.OnCompleted(container, t);
        Assert.True(s.IsThrottled(7, t + 500_000), "the pressure did not hold");
        Assert.False(s.IsThrottled(7, t + 2_100_000), "still throttled after the hold");
    }
}
