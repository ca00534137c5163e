using System.Net.Sockets;
using Hci.Core.Blocks;
using Hci.Scheduling;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using static Hci.Hosting.Tests.HostFixture;

namespace Hci.Hosting.Tests;

/// <summary>A real generic host serving real devices: io_uring on a temporary file, sockets a client connects to.</summary>
public sealed class HciHostTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("hci-hosting-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task AHostServesAFileDeviceThroughIoUringOverVhostUserBlkAndOnStopClosesItAndRemovesTheSocket()
    {
        string image = Path.Combine(_dir, "disk0.img");
        string socket = Path.Combine(_dir, "vol0.sock");
        using var host = Build(new Dictionary<string, string?>
        {
            ["Hci:Devices:disk0:Engine"] = "io_uring",
            ["Hci:Devices:disk0:Path"] = image,
            ["Hci:Devices:disk0:Size"] = $"{16 << 20}",
            ["Hci:VhostUserBlk:vol0:Device"] = "disk0",
            ["Hci:VhostUserBlk:vol0:SocketPath"] = socket,
            ["Hci:VhostUserBlk:vol0:MaxQueues"] = "2",
            ["Hci:VhostUserBlk:vol0:ReactorThreads"] = "1",
        });
        var runtime = host.Services.GetRequiredService<HciRuntime>();
        Assert.Equal(HciRuntimeState.NotStarted, runtime.State);

        await host.StartAsync();

        // Started means listening: a client connects at once, with no wait for readiness.
        Assert.Equal(HciRuntimeState.Running, runtime.State);
        Assert.Equal("io_uring", runtime.GetDevice("disk0").Engine);
        Assert.Equal(16 << 20, runtime.GetDevice("disk0").Geometry.Capacity);
        Assert.True(HoldsOpen(image), "the device's file is open while the host runs");
        await WriteAndReadBackAsync(socket, 8 * Block, seed: 7);
        Assert.Equal("vol0", runtime.VhostUserBlkServers["vol0"].Options.Serial);
        Assert.True(runtime.VhostUserBlkServers["vol0"].Requests >= 2);

        var health = await HealthAsync(host);
        Assert.Equal(HealthStatus.Healthy, health.Status);
        Assert.Contains("listening", (string)health.Entries["hci"].Data["vhost-user-blk:vol0"], StringComparison.Ordinal);

        await host.StopAsync();

        Assert.Equal(HciRuntimeState.Stopped, runtime.State);
        Assert.False(File.Exists(socket), "the socket file is removed when the host stops");
        Assert.False(HoldsOpen(image), "the device's file is closed when the host stops");
        Assert.Empty(runtime.Devices);
        Assert.Throws<InvalidOperationException>(() => runtime.GetDevice("disk0"));
        Assert.Equal(HealthStatus.Unhealthy, (await HealthAsync(host)).Status);

        // What was written is on the file: a second host over it reads it back.
        using var again = Build(new Dictionary<string, string?>
        {
            ["Hci:Devices:disk0:Path"] = image,
            ["Hci:VhostUserBlk:vol0:Device"] = "disk0",
            ["Hci:VhostUserBlk:vol0:SocketPath"] = socket,
        });
        await again.StartAsync();
        await using (var client = Hci.Transport.Vhost.VhostUserBlkClient.Connect(new Hci.Transport.Vhost.VhostUserBlkClientOptions { SocketPath = socket }))
        {
            using var read = new Hci.Core.Buffers.AlignedBuffer(Block);
            await client.ReadAsync(8 * Block, read.Memory);
            Assert.Equal(7, read.Span[0]);
            Assert.Equal((byte)(7 + 100), read.Span[100]);
        }

        await again.StopAsync();
    }

    [Fact]
    public async Task SocketsOfOneDeviceOnSharedReactorsServeBothClassesUnderTheDevicesNamedScheduler()
    {
        string vm = Path.Combine(_dir, "vm.sock");
        string ct = Path.Combine(_dir, "ct.sock");
        using var host = Build(new Dictionary<string, string?>
        {
            ["Hci:Reactors"] = "1",
            ["Hci:Schedulers:paper:Kind"] = "hybrid",
            ["Hci:Devices:disk0:Engine"] = "memory",
            ["Hci:Devices:disk0:Size"] = $"{16 << 20}",
            ["Hci:Devices:disk0:Scheduler"] = "paper",
            ["Hci:VhostUserBlk:vm:Device"] = "disk0",
            ["Hci:VhostUserBlk:vm:SocketPath"] = vm,
            ["Hci:VhostUserBlk:vm:TenantPerConnection"] = "true",
            ["Hci:VhostUserBlk:ct:Device"] = "disk0",
            ["Hci:VhostUserBlk:ct:SocketPath"] = ct,
            ["Hci:VhostUserBlk:ct:Class"] = "Container",
            ["Hci:VhostUserBlk:ct:AllowedUsers:0"] = $"{Tmds.Linux.LibC.getuid()}",
        });
        await host.StartAsync();
        var runtime = host.Services.GetRequiredService<HciRuntime>();

        var scheduled = Assert.IsType<ScheduledBlockDevice>(runtime.GetDevice("disk0"));
        Assert.Equal(SchedulerKind.Hybrid, scheduled.Options.Kind);
        Assert.Equal(IoClass.Container, runtime.VhostUserBlkServers["ct"].Options.Class);
        Assert.Equal([Tmds.Linux.LibC.getuid()], runtime.VhostUserBlkServers["ct"].Options.AllowedUsers);
        Assert.Same(runtime.VhostUserBlkServers["vm"].Options.Reactors, runtime.VhostUserBlkServers["ct"].Options.Reactors);
        Assert.NotNull(runtime.VhostUserBlkServers["vm"].Options.Reactors);
        await WriteAndReadBackAsync(vm, 0, seed: 1);
        await WriteAndReadBackAsync(ct, Block, seed: 2);

        await host.StopAsync();
        Assert.False(File.Exists(vm) || File.Exists(ct), "both socket files are removed");
    }

    [Fact]
    public async Task AHostDisposedWithoutStoppingStillClosesItsSocketsAndDevices()
    {
        string image = Path.Combine(_dir, "disk0.img");
        string socket = Path.Combine(_dir, "vol0.sock");
        var host = Build(new Dictionary<string, string?>
        {
            ["Hci:Devices:disk0:Path"] = image,
            ["Hci:Devices:disk0:Size"] = $"{1 << 20}",
            ["Hci:VhostUserBlk:vol0:Device"] = "disk0",
            ["Hci:VhostUserBlk:vol0:SocketPath"] = socket,
        });
        await host.StartAsync();
        Assert.True(File.Exists(socket));

        host.Dispose();

        Assert.False(File.Exists(socket), "the socket file is removed when the host is disposed");
        Assert.False(HoldsOpen(image), "the device's file is closed when the host is disposed");
    }

    [Fact]
    public async Task AStartThatFailsStopsWhatHadStartedAndSaysWhichKeyToFix()
    {
        string image = Path.Combine(_dir, "disk0.img");
        string good = Path.Combine(_dir, "good.sock");
        using var host = Build(new Dictionary<string, string?>
        {
            ["Hci:Devices:disk0:Path"] = image,
            ["Hci:Devices:disk0:Size"] = $"{1 << 20}",
            ["Hci:VhostUserBlk:good:Device"] = "disk0",
            ["Hci:VhostUserBlk:good:SocketPath"] = good,
            ["Hci:VhostUserBlk:bad:Device"] = "disk0",
            ["Hci:VhostUserBlk:bad:SocketPath"] = Path.Combine(_dir, "no-such-dir", "bad.sock"),
        });

        string message = await StartFailureAsync(host);

        Assert.Contains("Hci:VhostUserBlk:bad: cannot listen on", message, StringComparison.Ordinal);
        Assert.Contains("Check the directory exists", message, StringComparison.Ordinal);
        var runtime = host.Services.GetRequiredService<HciRuntime>();
        Assert.Equal(HciRuntimeState.Failed, runtime.State);
        Assert.False(File.Exists(good), "the socket that had started is closed again");
        Assert.False(HoldsOpen(image), "the device that had opened is closed again");
        var health = await HealthAsync(host);
        Assert.Equal(HealthStatus.Unhealthy, health.Status);
        Assert.Contains("Hci:VhostUserBlk:bad", health.Entries["hci"].Description, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ADeviceThatCannotOpenFailsStartWithItsKeyAndPath()
    {
        string missing = Path.Combine(_dir, "no-such-dir", "disk0.img");
        using var host = Build(new Dictionary<string, string?>
        {
            ["Hci:Devices:disk0:Path"] = missing,
            ["Hci:Devices:disk0:Size"] = $"{1 << 20}",
        });

        string message = await StartFailureAsync(host);

        Assert.StartsWith($"Hci:Devices:disk0: the device cannot open '{missing}':", message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AnIscsiTargetListensOnItsPortalWhileTheHostRunsAndClosesItOnStop()
    {
        using var host = Build(new Dictionary<string, string?>
        {
            ["Hci:Devices:disk0:Engine"] = "memory",
            ["Hci:Devices:disk0:Size"] = $"{16 << 20}",
            ["Hci:Iscsi:target0:Portal"] = "127.0.0.1:0",
            ["Hci:Iscsi:target0:TargetName"] = "iqn.2026-11.org.example:hosting",
            ["Hci:Iscsi:target0:Insecure"] = "true",
            ["Hci:Iscsi:target0:Luns:1"] = "disk0",
        });
        await host.StartAsync();
        var target = host.Services.GetRequiredService<HciRuntime>().IscsiTargets["target0"];
        var portal = target.LocalEndPoint;
        Assert.NotEqual(0, portal.Port);
        using (var tcp = new TcpClient())
        {
            await tcp.ConnectAsync(portal);
        }

        Assert.Equal(HealthStatus.Healthy, (await HealthAsync(host)).Status);
        await host.StopAsync();

        using var after = new TcpClient();
        await Assert.ThrowsAsync<SocketException>(() => after.ConnectAsync(portal));
    }
}
