using System.Diagnostics;

namespace Hci.Bench.Tests;

/// <summary><c>hci dev up</c> / <c>hci dev down</c> and <c>hci cluster key</c>, run as real processes: a real etcd
/// and three real hci-hosttype nodes, driven by hci-bench's vhost-user engine.</summary>
public sealed class HciDevClusterTests : IDisposable
{
    private readonly string _dir = Path.Combine("/var/tmp", $"hci-dev-{Guid.NewGuid():N}");

    public void Dispose()
    {
        // Whatever happened, nothing the test started may outlive it.
        if (File.Exists(Path.Combine(_dir, "pids")))
        {
            Hci("dev", "down", "--dir", _dir).GetAwaiter().GetResult();
            if (File.Exists(Path.Combine(_dir, "pids")))
            {
                foreach (string line in File.ReadAllLines(Path.Combine(_dir, "pids")))
                {
                    try
                    {
                        using var process = Process.GetProcessById(int.Parse(line.Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture));
                        process.Kill();
                    }
                    catch (ArgumentException)
                    {
                    }
                }
            }
        }

        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (DirectoryNotFoundException)
        {
        }
    }

    private static string HciDll()
    {
        string configuration = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)).Parent!.Name; // bin/<configuration>/net10.0
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Hci.sln")))
            {
                return Path.Combine(dir.FullName, "samples", "Hci.Cli", "bin", configuration, "net10.0", "hci.dll");
            }
        }

        throw new InvalidOperationException("The repository root (Hci.sln) is not above the test's directory.");
    }

    private static async Task<(int Code, string Output, string Error)> Hci(params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(HciDll());
        foreach (string arg in args)
        {
            psi.ArgumentList.Add(arg);
        }

        using var process = Process.Start(psi)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(150));
        await process.WaitForExitAsync(timeout.Token);
        return (process.ExitCode, await output, await error);
    }

    [Fact]
    public async Task ClusterKeyWritesANewKeyReadableOnlyByItsOwnerAndNeverOverwritesOne()
    {
        Directory.CreateDirectory(_dir);
        string key = Path.Combine(_dir, "k");
        var (code, output, error) = await Hci("cluster", "key", "--out", key);
        Assert.True(code == 0, error);
        Assert.Contains("--cluster-key-file", output);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(key));
        byte[] first = await File.ReadAllBytesAsync(key);
        Assert.True(first.Length >= 32);

        (code, _, error) = await Hci("cluster", "key", "--out", key);
        Assert.Equal(1, code);
        Assert.Contains("never overwritten", error);
        Assert.Equal(first, await File.ReadAllBytesAsync(key));
    }

    [Fact]
    public async Task DevUpStartsThreeNodesThatServeAVolumeHciBenchWritesThroughAndDevDownStopsThem()
    {
        var (code, output, error) = await Hci("dev", "up", "--nodes", "3", "--dir", _dir, "--size", "1G");
        Assert.True(code == 0, $"dev up failed ({code}): {output}{error}");
        Assert.Contains("3 of 3 up", output);
        Assert.Contains(Path.Combine(_dir, "node1", "sockets", "vol1.sock"), output);
        string url = File.ReadAllText(Path.Combine(_dir, "etcd.url")).Trim();
        Assert.Contains($"--etcd {url} volume create", output);
        string[] pids = File.ReadAllLines(Path.Combine(_dir, "pids"));
        Assert.Equal(4, pids.Length);

        // hci has exited: the cluster it started still runs.
        (code, output, error) = await Hci("--etcd", url, "cluster", "status");
        Assert.True(code == 0, error);
        Assert.Contains("3 of 3 nodes up", output);

        Assert.Equal(0, (await Hci("--etcd", url, "volume", "create", "vol1", "--size", "256M", "--replicas", "3")).Code);
        Assert.Equal(0, (await Hci("--etcd", url, "volume", "attach", "vol1", "--node", "node1")).Code);
        string socket = Path.Combine(_dir, "node1", "sockets", "vol1.sock");
        var watch = Stopwatch.StartNew();
        while (!File.Exists(socket))
        {
            Assert.True(watch.Elapsed < TimeSpan.FromSeconds(60), $"{socket} did not appear: {File.ReadAllText(Path.Combine(_dir, "node1.log"))}");
            await Task.Delay(100);
        }

        var bench = new StringWriter();
        var log = new StringWriter();
        int benchCode = BenchRunner.Run(BenchOptions.Parse(["--ioengine=vhost-user", $"--filename={socket}", "--rw=write", "--bs=64k", "--iodepth=4", "--size=8m", "--name=dev"]), bench, log);
        Assert.True(benchCode == 0, $"hci-bench: {bench}{log}");
        Assert.Contains("write: IOPS=", bench.ToString());

        (code, output, error) = await Hci("--etcd", url, "volume", "status", "vol1");
        Assert.True(code == 0, error);

        (code, output, error) = await Hci("dev", "down", "--dir", _dir);
        Assert.True(code == 0, error);
        Assert.Equal(4, output.Split('\n').Count(l => l.StartsWith("stopped ", StringComparison.Ordinal)));
        foreach (string line in pids)
        {
            int pid = int.Parse(line.Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);
            Assert.False(Directory.Exists($"/proc/{pid}") && !File.ReadAllText($"/proc/{pid}/stat").Contains(") Z", StringComparison.Ordinal), $"pid {pid} ({line}) still runs");
        }

        Assert.False(File.Exists(Path.Combine(_dir, "pids")));
    }
}
