using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Hci.Bench.Tests;

/// <summary>hci-vmtype as a node of the embedded single-node store (<c>--data-dir</c>): the hci tool works on the
/// store beside it, and each volume attached to the node becomes a LUN of its target, seen by libiscsi's tools.</summary>
public sealed class VmTypeClusterNodeTests : IDisposable
{
    private const string Iqn = "iqn.2026-11.org.hci.test:node1";
    private readonly string _dir = Path.Combine("/var/tmp", $"hci-vmnode-{Guid.NewGuid():N}");

    public VmTypeClusterNodeTests() => Directory.CreateDirectory(_dir);

    public void Dispose()
    {
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (DirectoryNotFoundException)
        {
        }
    }

    private static string Built(string project, string dll) => SampleProcesses.Built(project, dll);

    private static Task<(int Code, string Output)> Run(string program, params string[] args) => SampleProcesses.RunAsync(program, args);

    private Task<(int Code, string Output)> Hci(params string[] args) => Run("dotnet", [Built("Hci.Cli", "hci.dll"), "--data-dir", Path.Combine(_dir, "store"), .. args]);

    [Fact]
    public async Task EveryVolumeAttachedToAVmTypeNodeIsALunOfItsTargetAndADetachedOneLeavesIt()
    {
        int port;
        using (var probe = new TcpListener(IPAddress.Loopback, 0))
        {
            probe.Start();
            port = ((IPEndPoint)probe.LocalEndpoint).Port;
        }

        await using var host = SampleHostProcess.Start(
            Built("Hci.Samples.VmType", "hci-vmtype.dll"),
            ["--portal", $"127.0.0.1:{port}", "--iqn", Iqn, "--insecure", "--data-dir", Path.Combine(_dir, "store"), "--node", "node1", "--device", $"{Path.Combine(_dir, "dev0.img")}:1G"]);
        await host.WaitForLogAsync("ready: cluster node node1");
        foreach (string name in new[] { "a", "b" })
        {
            var (code, output) = await Hci("volume", "create", name, "--size", "64M", "--replicas", "1");
            Assert.True(code == 0, output);
            (code, output) = await Hci("volume", "attach", name, "--node", "node1");
            Assert.True(code == 0, output);
        }

        await host.WaitForLogAsync("LUN 1 of " + Iqn + " serves replicated volume a");
        await host.WaitForLogAsync("LUN 2 of " + Iqn + " serves replicated volume b");
        var (lsCode, ls) = await Run("iscsi-ls", "-s", $"iscsi://127.0.0.1:{port}");
        Assert.True(lsCode == 0, ls);
        Assert.Matches("Lun:1 +Type:DIRECT_ACCESS", ls);
        Assert.Matches("Lun:2 +Type:DIRECT_ACCESS", ls);
        var (capCode, capacity) = await Run("iscsi-readcapacity16", $"iscsi://127.0.0.1:{port}/{Iqn}/2");
        Assert.True(capCode == 0, capacity);
        Assert.Contains($"{64L << 20}", capacity);

        var (detachCode, detached) = await Hci("volume", "detach", "a");
        Assert.True(detachCode == 0, detached);
        await host.WaitForLogAsync("LUN 1 (volume a) removed");
        (lsCode, ls) = await Run("iscsi-ls", "-s", $"iscsi://127.0.0.1:{port}");
        Assert.True(lsCode == 0, ls);
        Assert.DoesNotMatch("Lun:1 ", ls);
        Assert.Matches("Lun:2 +Type:DIRECT_ACCESS", ls);
    }
}
