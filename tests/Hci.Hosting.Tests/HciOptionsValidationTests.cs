using Microsoft.Extensions.DependencyInjection;
using static Hci.Hosting.Tests.HostFixture;

namespace Hci.Hosting.Tests;

/// <summary>Invalid settings fail the host's start, before anything opens, with a message that names the key and says what to fix.</summary>
public sealed class HciOptionsValidationTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("hci-hosting-options-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    public static TheoryData<string, string, string?, string> Cases => new()
    {
        { "a socket without a path", "Hci:VhostUserBlk:vol0:SocketPath", null, "Hci:VhostUserBlk:vol0:SocketPath: required: the Unix socket front-ends connect to" },
        { "a size that is not whole blocks", "Hci:Devices:disk0:Size", "1000", "Hci:Devices:disk0:Size: must be a multiple of 4096 (the logical block size); got 1000." },
        { "a negative size", "Hci:Devices:disk0:Size", "-4096", "Hci:Devices:disk0:Size: must be positive; got -4096." },
        { "a socket naming a device that does not exist", "Hci:VhostUserBlk:vol0:Device", "disk9", "Hci:VhostUserBlk:vol0:Device: no device named 'disk9' (the devices are disk0); add Hci:Devices:disk9 or fix the name." },
        { "a scheduler that does not exist", "Hci:Devices:disk0:Scheduler", "fancy", "Hci:Devices:disk0:Scheduler: 'fancy' is neither a scheduler defined under Hci:Schedulers nor a kind; define Hci:Schedulers:fancy, or use none, fifo, limits, mclock or hybrid." },
        { "an engine that does not exist", "Hci:Devices:disk0:Engine", "spdk", "Hci:Devices:disk0:Engine: 'spdk' is not an engine; use io_uring, file, memory, null or auto." },
        { "a memory device without a size", "Hci:Devices:disk0:Engine", "memory", "Hci:Devices:disk0:Size: required by the memory engine" },
        { "a logical block size that is not a power of two", "Hci:Devices:disk0:LogicalBlockSize", "3000", "Hci:Devices:disk0:LogicalBlockSize: must be a power of two from 512 to 65536; got 3000." },
        { "a misspelt key of a socket", "Hci:VhostUserBlk:vol0:SocketPth", "x.sock", "Hci:VhostUserBlk:vol0:SocketPth: not a setting of a vhost-user-blk socket; the settings are Device, SocketPath, SocketMode," },
        { "a misspelt key of a device", "Hci:Devices:disk0:Sise", "4096", "Hci:Devices:disk0:Sise: not a setting of a device; the settings are Engine, Path, Size," },
        { "a misspelt section", "Hci:Device:disk1:Path", "x.img", "Hci:Device: not a setting of Hci; the settings are Reactors," },
        { "a health probe timeout past what a check can wait", "Hci:HealthProbeTimeout", "50.00:00:00", "Hci:HealthProbeTimeout: must be positive and at most 00:10:00" },
        { "a socket class the front-ends cannot have", "Hci:VhostUserBlk:vol0:Class", "Background", "Hci:VhostUserBlk:vol0: VhostUserBlkServerOptions.Class must be Vm or Container" },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task InvalidSettingsFailStartWithTheKeyAndWhatToFix(string what, string key, string? value, string expected)
    {
        var configuration = new Dictionary<string, string?>
        {
            ["Hci:Devices:disk0:Path"] = Path.Combine(_dir, "disk0.img"),
            ["Hci:VhostUserBlk:vol0:Device"] = "disk0",
            ["Hci:VhostUserBlk:vol0:SocketPath"] = Path.Combine(_dir, "vol0.sock"),
        };
        if (value == null)
        {
            configuration.Remove(key);
        }
        else
        {
            configuration[key] = value;
        }

        using var host = Build(configuration);
        string message = await StartFailureAsync(host);

        Assert.True(message.Contains(expected, StringComparison.Ordinal), $"{what}: expected \"{expected}\" in \"{message}\"");
        Assert.Equal(HciRuntimeState.NotStarted, host.Services.GetRequiredService<HciRuntime>().State);
        Assert.False(File.Exists(Path.Combine(_dir, "disk0.img")), $"{what}: nothing is opened or created before the settings are valid");
        Assert.False(File.Exists(Path.Combine(_dir, "vol0.sock")), $"{what}: no socket is created before the settings are valid");
    }

    [Fact]
    public async Task EveryInvalidSettingIsReportedAtOnce()
    {
        using var host = Build(new Dictionary<string, string?>
        {
            ["Hci:Devices:disk0:Engine"] = "memory",
            ["Hci:Devices:disk0:Size"] = "1000",
            ["Hci:Devices:disk0:Scheduler"] = "fancy",
            ["Hci:VhostUserBlk:vol0:Device"] = "disk9",
        });

        string message = await StartFailureAsync(host);

        Assert.Contains("Hci:Devices:disk0:Size:", message, StringComparison.Ordinal);
        Assert.Contains("Hci:Devices:disk0:Scheduler:", message, StringComparison.Ordinal);
        Assert.Contains("Hci:VhostUserBlk:vol0:Device:", message, StringComparison.Ordinal);
        Assert.Contains("Hci:VhostUserBlk:vol0:SocketPath:", message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AnIscsiTargetOpenToAnyoneMustSaySo()
    {
        using var host = Build(new Dictionary<string, string?>
        {
            ["Hci:Devices:disk0:Engine"] = "null",
            ["Hci:Devices:disk0:Size"] = $"{1 << 20}",
            ["Hci:Iscsi:target0:TargetName"] = "iqn.2026-11.org.example:open",
            ["Hci:Iscsi:target0:Luns:0"] = "disk0",
        });

        string message = await StartFailureAsync(host);

        Assert.Contains("Hci:Iscsi:target0:ChapUser: no authentication", message, StringComparison.Ordinal);
        Assert.Contains("Hci:Iscsi:target0:Insecure", message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task TwoSocketsOnOnePathFailStart()
    {
        string socket = Path.Combine(_dir, "same.sock");
        using var host = Build(new Dictionary<string, string?>
        {
            ["Hci:Devices:disk0:Engine"] = "null",
            ["Hci:Devices:disk0:Size"] = $"{1 << 20}",
            ["Hci:VhostUserBlk:a:Device"] = "disk0",
            ["Hci:VhostUserBlk:a:SocketPath"] = socket,
            ["Hci:VhostUserBlk:b:Device"] = "disk0",
            ["Hci:VhostUserBlk:b:SocketPath"] = socket,
        });

        string message = await StartFailureAsync(host);

        Assert.Contains($"Hci:VhostUserBlk:b:SocketPath: '{socket}' is also the socket of Hci:VhostUserBlk:a", message, StringComparison.Ordinal);
    }

    [Fact]
    public void TwoDevicesOfOneNameAreRefusedWhenRegistered()
    {
        var services = new ServiceCollection();
        var hci = services.AddHci().AddDevice("disk0", o => o.Engine = "null");
        var e = Assert.Throws<ArgumentException>(() => hci.AddDevice("disk0", o => o.Engine = "memory"));
        Assert.StartsWith("A device named 'disk0' is already registered (Hci:Devices:disk0)", e.Message, StringComparison.Ordinal);
    }
}
