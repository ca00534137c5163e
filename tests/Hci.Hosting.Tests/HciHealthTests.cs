using Hci.Core.Devices;
using Hci.Core.Replication;
using Hci.Testing.Replication;
using Hci.Core.Devices.Decorators;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using static Hci.Hosting.Tests.HostFixture;

namespace Hci.Hosting.Tests;

/// <summary>The health check follows what front-ends would meet: a device that fails, a socket that is gone.</summary>
public sealed class HciHealthTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("hci-hosting-health-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task HealthTurnsUnhealthyWhileADeviceFailsItsReadsAndHealthyAgainWhenItRecovers()
    {
        FaultInjectionBlockDevice? faulty = null;
        string socket = Path.Combine(_dir, "vol0.sock");
        using var host = Build(
            new Dictionary<string, string?>
            {
                ["Hci:VhostUserBlk:vol0:Device"] = "disk0",
                ["Hci:VhostUserBlk:vol0:SocketPath"] = socket,
            },
            hci => hci.AddDevice("disk0", _ => faulty = new FaultInjectionBlockDevice(BlockDevices.Open(new BlockDeviceOptions { Engine = BlockEngine.Memory, Size = 16 << 20 }))));
        await host.StartAsync();
        Assert.Equal(HealthStatus.Healthy, (await HealthAsync(host)).Status);

        var rule = faulty!.Add(new FaultRule(FaultKind.Error));
        var failing = await HealthAsync(host);

        Assert.Equal(HealthStatus.Unhealthy, failing.Status);
        Assert.Contains("device 'disk0': a read of its first block failed", failing.Entries["hci"].Description, StringComparison.Ordinal);
        Assert.StartsWith("failing:", (string)failing.Entries["hci"].Data["device:disk0"], StringComparison.Ordinal);

        faulty.Remove(rule);
        Assert.Equal(HealthStatus.Healthy, (await HealthAsync(host)).Status);
        await host.StopAsync();
    }

    [Fact]
    public async Task AReplicatedVolumeWithAReplicaOutOfSyncIsDegradedAndHealthyAgainOnceResynced()
    {
        const long extent = 4L << 20;
        using var cluster = await InProcessReplicaCluster.StartAsync(3, extentSize: extent);
        var control = new MemoryVolumeControl(cluster.Placement(3));
        ReplicatedVolume? volume = null;
        using var host = Build(
            new Dictionary<string, string?>(),
            hci => hci.AddDevice("vol", _ => volume = ReplicatedVolume.OpenAsync(
                new ReplicatedVolumeSpec { Name = "vol", VolumeId = 3, Size = 4 * extent, Epoch = 1, MinInSync = 2, LocalNodeId = "node1", Extents = control.Snapshot() },
                cluster.Connector,
                control,
                new ReplicatedVolumeOptions { ResyncInterval = TimeSpan.FromMilliseconds(50), BufferAlignment = 1 }).GetAwaiter().GetResult()));
        await host.StartAsync();
        await volume!.WriteAsync(0, new byte[4096]);
        Assert.Equal(HealthStatus.Healthy, (await HealthAsync(host)).Status);

        cluster.Connector.SetDown("node3", true);
        await volume.WriteAsync(4096, new byte[4096]); // node3 misses it: out of sync, the write goes on
        var degraded = await HealthAsync(host);
        Assert.Equal(HealthStatus.Degraded, degraded.Status);
        Assert.Contains("volume 'vol': 1 of 1 written extent(s) have a replica that is not in sync", degraded.Entries["hci"].Description, StringComparison.Ordinal);

        cluster.Connector.SetDown("node3", false);
        var deadline = System.Diagnostics.Stopwatch.StartNew();
        HealthReport report;
        while ((report = await HealthAsync(host)).Status != HealthStatus.Healthy)
        {
            Assert.True(deadline.Elapsed < TimeSpan.FromSeconds(30), $"still {report.Status} after node3 came back: {report.Entries["hci"].Description}");
            await volume.WriteAsync(8192, new byte[4096]); // work for the volume while resync runs; each check is a fresh look
        }

        await host.StopAsync();
    }

    [Fact]
    public async Task HealthTurnsUnhealthyWhenADeviceDoesNotAnswerWithinTheProbeTimeout()
    {
        using var host = Build(
            new Dictionary<string, string?> { ["Hci:HealthProbeTimeout"] = "00:00:00.050" },
            hci => hci.AddDevice("slow", _ => new DelayBlockDevice(BlockDevices.Open(new BlockDeviceOptions { Engine = BlockEngine.Memory, Size = 1 << 20 }), readDelay: TimeSpan.FromSeconds(1), writeDelay: TimeSpan.Zero)));
        await host.StartAsync();

        var report = await HealthAsync(host);

        Assert.Equal(HealthStatus.Unhealthy, report.Status);
        Assert.Contains("device 'slow': a read of its first block did not complete within 0.05 s", report.Entries["hci"].Description, StringComparison.Ordinal);
        await host.StopAsync(); // the probe's read is still at the device: its buffer outlives the check
    }

    [Fact]
    public async Task HealthTurnsUnhealthyWhenASocketFileIsRemovedUnderTheServer()
    {
        string socket = Path.Combine(_dir, "vol0.sock");
        using var host = Build(new Dictionary<string, string?>
        {
            ["Hci:Devices:disk0:Engine"] = "null",
            ["Hci:Devices:disk0:Size"] = $"{16 << 20}",
            ["Hci:VhostUserBlk:vol0:Device"] = "disk0",
            ["Hci:VhostUserBlk:vol0:SocketPath"] = socket,
        });
        await host.StartAsync();
        Assert.Equal(HealthStatus.Healthy, (await HealthAsync(host)).Status);

        File.Delete(socket); // as a careless clean-up of /run would
        var report = await HealthAsync(host);

        Assert.Equal(HealthStatus.Unhealthy, report.Status);
        Assert.Contains($"vhost-user-blk 'vol0': its socket '{socket}' is gone", report.Entries["hci"].Description, StringComparison.Ordinal);
        await host.StopAsync();
    }
}
