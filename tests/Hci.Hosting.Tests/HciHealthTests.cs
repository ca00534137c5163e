using Hci.Core.Devices;
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
