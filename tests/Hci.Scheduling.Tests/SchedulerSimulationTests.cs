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
}
