using Hci.Bench;

namespace Hci.Bench.Tests;

/// <summary>hci-hybrid as a node of the embedded single-node store (<c>--data-dir</c>): a volume attached to it is served
/// as a VM socket and a container socket, and both carry verified I/O (hci-bench --verify) under one scheduler.</summary>
public sealed class HybridClusterNodeTests : IDisposable
{
    private readonly string _dir = Path.Combine("/var/tmp", $"hci-hybridnode-{Guid.NewGuid():N}");

    public HybridClusterNodeTests() => Directory.CreateDirectory(_dir);

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

    private Task<(int Code, string Output)> Hci(params string[] args)
        => SampleProcesses.RunAsync("dotnet", [Built("Hci.Cli", "hci.dll"), "--data-dir", Path.Combine(_dir, "store"), .. args]);

    [Fact]
    public async Task AVolumeAttachedToAHybridNodeIsServedAsAVmAndAContainerSocketThatBothCarryVerifiedIo()
    {
        string sockets = Path.Combine(_dir, "sockets");
        await using var host = SampleHostProcess.Start(
            Built("Hci.Samples.Hybrid", "hci-hybrid.dll"),
            ["--data-dir", Path.Combine(_dir, "store"), "--node", "node1", "--device", $"{Path.Combine(_dir, "dev0.img")}:512M", "--socket-dir", sockets]);
        await host.WaitForLogAsync("ready: cluster node node1");
        var (code, output) = await Hci("volume", "create", "v", "--size", "64M", "--replicas", "1");
        Assert.True(code == 0, output);
        (code, output) = await Hci("volume", "attach", "v", "--node", "node1");
        Assert.True(code == 0, output);
        await host.WaitForLogAsync("serve replicated volume v");

        // The VM socket and the container socket, each in its own half of the volume, with verification.
        foreach (var (socket, offset) in new[] { ("v.vm.sock", "0"), ("v.ct.sock", "32m") })
        {
            var options = BenchOptions.Parse([$"--ioengine=vhost-user", $"--filename={Path.Combine(sockets, socket)}", $"--offset={offset}", "--size=32m", "--rw=randrw", "--iodepth=8", "--runtime=1s", "--time_based", "--verify=crc32c"]);
            var bench = new StringWriter();
            var benchLog = new StringWriter();
            int result = BenchRunner.Run(options, bench, benchLog);
            Assert.True(result == 0, $"{socket}: {benchLog}{bench}");
            Assert.Matches(@"verify: [1-9]\d* reads checked against this run's writes, all good", benchLog.ToString());
        }

        Assert.Contains("class Vm, tenant", host.Log, StringComparison.Ordinal);
        Assert.Contains("class Container, tenant", host.Log, StringComparison.Ordinal);
        (code, output) = await Hci("volume", "detach", "v");
        Assert.True(code == 0, output);
        await host.WaitForLogAsync("volume v detached");
        Assert.False(File.Exists(Path.Combine(sockets, "v.vm.sock")), "the VM socket outlived the detach");
        Assert.False(File.Exists(Path.Combine(sockets, "v.ct.sock")), "the container socket outlived the detach");
    }
}
