using System.Diagnostics;
using System.Text;
using static Hci.Bench.Tests.SampleProcesses;

namespace Hci.Bench.Tests;

/// <summary>
/// The sample hosts' command lines and settings as a user meets them, on the real programs: --help documents every
/// option, a JSON file and the environment supply settings that the command line overrides, and a mistake is said
/// clearly with exit code 2.
/// </summary>
public sealed class SampleHostSettingsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("hci-settings-").FullName;

    public static TheoryData<string, string, string[]> Hosts => new()
    {
        // Every option the README, the rigs, bench/ and the tests use, and every other one each host has.
        {
            "Hci.Samples.HostType", "hci-hosttype.dll",
            ["--socket", "--backing", "--size", "--ioengine", "--buffered", "--readonly", "--allow-unsealed-memory", "--queues", "--serial", "--tenant", "--scheduler",
             "--socket-dir", "--reactors", "--poll-us", "--config", "--verbose", "--help", .. ClusterFlags]
        },
        {
            "Hci.Samples.VmType", "hci-vmtype.dll",
            ["--portal", "--iqn", "--backing", "--size", "--ioengine", "--lun", "--scheduler", "--buffered", "--poll-us", "--chap-user", "--chap-secret-file", "--chap-secret",
             "--mutual-chap-user", "--mutual-chap-secret-file", "--mutual-chap-secret", "--allow-initiator", "--insecure", "--config", "--verbose", "--help", .. ClusterFlags]
        },
        {
            "Hci.Samples.Hybrid", "hci-hybrid.dll",
            ["--vm-socket", "--container-socket", "--backing", "--size", "--ioengine", "--scheduler", "--container-allow", "--vm-allow", "--reactors", "--poll-us", "--buffered",
             "--socket-dir", "--config", "--verbose", "--help", .. ClusterFlags]
        },
        {
            "Hci.Bench", "hci-bench.dll",
            ["--filename", "--size", "--rw", "--readwrite", "--rwmixread", "--bs", "--blocksize", "--iodepth", "--numjobs", "--runtime", "--time_based", "--time-based", "--ramp_time",
             "--direct", "--ioengine", "--hipri", "--output-format", "--output_format", "--name", "--fixedbufs", "--breakdown", "--offset", "--verify", "--group_reporting", "--thread",
             "--config", "--help"]
        },
    };

    private static string[] ClusterFlags => ["--etcd", "--data-dir", "--node", "--listen", "--domain", "--device", "--cluster-key-file"];

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [MemberData(nameof(Hosts))]
    public async Task HelpDocumentsEveryOptionWithItsDefaultsAndAllowedValues(string project, string dll, string[] flags)
    {
        var (code, output) = await RunAsync("dotnet", [Built(project, dll), "--help"]);

        Assert.Equal(0, code);
        // Option lines are indented by two spaces; a description's continuation lines by more.
        var documented = output.Split('\n').Where(l => l.StartsWith("  -", StringComparison.Ordinal)).Select(l => l.TrimStart()).ToList();
        foreach (string flag in flags)
        {
            // One line per option: its name, then a description (not just the name).
            string? line = documented.FirstOrDefault(l => l.Split([' ', ','], StringSplitOptions.RemoveEmptyEntries).Contains(flag) || l.StartsWith(flag + " ", StringComparison.Ordinal));
            Assert.True(line != null, $"{flag} is not in {dll} --help:\n{output}");
            Assert.Matches(@"\S+\s{2,}\S", line);
        }

        Assert.Contains("io_uring|file|memory|null", output);
        Assert.Contains("[default:", output);
    }

    [Fact]
    public async Task HciBenchContentionHelpDocumentsItsOptions()
    {
        var (code, output) = await RunAsync("dotnet", [Built("Hci.Bench", "hci-bench.dll"), "contention", "--help"]);

        Assert.Equal(0, code);
        Assert.Contains("hci-bench contention [options]", output);
        foreach (string flag in new[] { "--filename", "--size", "--runtime", "--iodepth", "--scheduler <fifo|limits|mclock|hybrid>", "--vm-overhead-us", "--bs", "--rounds", "--latency-tolerance", "--pressure-depth", "--sweep", "--csv", "--output-format", "--config" })
        {
            Assert.Contains("  " + flag, output);
        }
    }

    [Fact]
    public async Task HciBenchTakesSettingsFromItsFileThenTheEnvironmentThenTheCommandLine()
    {
        string config = Path.Combine(_dir, "bench.json");
        File.WriteAllText(config, """{ "ioEngine": "null", "size": "1m", "rw": "randwrite", "iodepth": 2, "name": "fromfile", "runtime": "100ms", "time_based": true }""");

        var (code, output) = await RunAsync("dotnet", [Built("Hci.Bench", "hci-bench.dll"), "--config", config, "--name=fromcli"], new() { ["HCI_BENCH_IODEPTH"] = "4" });

        Assert.True(code == 0, output);
        Assert.Contains("fromcli: (g=0): rw=randwrite, bs=4096, ioengine=null, iodepth=4", output);
    }

    [Fact]
    public async Task AJsonFileSuppliesSettingsAndTheCommandLineOverridesThem()
    {
        string config = Path.Combine(_dir, "hybrid.json");
        File.WriteAllText(config, """{ "scheduler": "fifo", "reactors": 2, "ioEngine": "memory", "size": "8m" }""");

        var (code, log) = await ServeAsync(
            "Hci.Samples.Hybrid",
            "hci-hybrid.dll",
            ["--config", config, "--reactors", "3", "--vm-socket", Path.Combine(_dir, "vm.sock")],
            "hci-hybrid: ready:");

        Assert.True(code == 0, log);
        Assert.Contains("serve memory (8388608 bytes, engine memory, scheduler fifo, 3 reactor(s))", log);
        Assert.Contains("hci-hybrid: stopping:", log);
    }

    [Fact]
    public async Task HciHosttypeAddsTheCommandLinesVolumesToTheFilesAndItsPollUsOverridesTheFiles()
    {
        string config = Path.Combine(_dir, "host.json");
        string fromFile = Path.Combine(_dir, "file.sock");
        string fromCommandLine = Path.Combine(_dir, "cli.sock");
        File.WriteAllText(config, $$"""{ "pollUs": 5000000, "volumes": [{ "socket": "{{fromFile}}", "ioEngine": "memory", "size": 4194304, "scheduler": "fifo" }] }""");

        // The file's poll-us is out of range on its own: the command line's replaces it.
        var (code, log) = await RunAsync("dotnet", [Built("Hci.Samples.HostType", "hci-hosttype.dll"), "--config", config]);
        Assert.Equal(2, code);
        Assert.Contains("--poll-us 5000000 (setting 'PollUs' from --config or the environment): expected a whole number from 0 to 1000000", log);

        (code, log) = await ServeAsync(
            "Hci.Samples.HostType",
            "hci-hosttype.dll",
            ["--config", config, "--poll-us", "10", "--socket", fromCommandLine, "--ioengine", "null", "--size", "1m"],
            $"hci-hosttype: ready: {fromCommandLine}");

        Assert.True(code == 0, log);
        Assert.Contains($"hci-hosttype: ready: {fromFile} serves memory (4194304 bytes, block 4096, engine memory, scheduler fifo)", log);
        Assert.Contains($"hci-hosttype: ready: {fromCommandLine} serves null (1048576 bytes", log);
        Assert.Contains("hci-hosttype: stopping: 0 requests served", log);
    }

    [Fact]
    public async Task ACommandLineAllowListReplacesASingleValueTheEnvironmentGave()
    {
        // The environment gives the list as one value, not as entries: the command line's list must still win, or a
        // container socket would admit a peer the command line did not name.
        string vm = Path.Combine(_dir, "vm.sock");
        string container = Path.Combine(_dir, "ct.sock");
        var (code, log) = await ServeAsync(
            "Hci.Samples.Hybrid",
            "hci-hybrid.dll",
            ["--vm-socket", vm, "--container-socket", container, "--container-allow", "uid:4242", "--ioengine", "null", "--size", "1m"],
            "hci-hybrid: ready:",
            new() { ["HCI_HYBRID_CONTAINERALLOW"] = "uid:7777" });

        Assert.True(code == 0, log);
        Assert.Contains($"socket {container} admits uid:4242", log);
        Assert.DoesNotContain("uid:7777", log);
    }

    [Fact]
    public async Task EnvironmentVariablesWithTheHostsPrefixSupplySettings()
    {
        string socket = Path.Combine(_dir, "env.sock");
        var (code, log) = await ServeAsync(
            "Hci.Samples.HostType",
            "hci-hosttype.dll",
            [],
            $"hci-hosttype: ready: {socket}",
            new() { ["HCI_HOSTTYPE_VOLUMES__0__SOCKET"] = socket, ["HCI_HOSTTYPE_VOLUMES__0__IOENGINE"] = "memory", ["HCI_HOSTTYPE_VOLUMES__0__SIZE"] = "2m", ["HCI_HOSTTYPE_REACTORS"] = "1" });

        Assert.True(code == 0, log);
        Assert.Contains($"hci-hosttype: ready: {socket} serves memory (2097152 bytes", log);
    }

    [Theory]
    [InlineData("Hci.Samples.HostType", "hci-hosttype.dll", new[] { "--socket", "s.sock", "--size", "4m", "--ioengine", "memory", "--queues", "0" }, "hci-hosttype: --queues 0: expected a whole number from 1 to 256")]
    [InlineData("Hci.Samples.HostType", "hci-hosttype.dll", new[] { "--socket", "s.sock", "--ioengine", "spdk" }, "hci-hosttype: --ioengine spdk: not known: use io_uring, file, memory or null")]
    [InlineData("Hci.Samples.HostType", "hci-hosttype.dll", new[] { "--size", "4m", "--socket", "s.sock" }, "hci-hosttype: --size belongs to a volume: give --socket PATH first")]
    [InlineData("Hci.Samples.HostType", "hci-hosttype.dll", new[] { "--socket", "s.sock", "--ioengine", "memory" }, "hci-hosttype: --ioengine memory needs --size BYTES (volume on s.sock)")]
    [InlineData("Hci.Samples.HostType", "hci-hosttype.dll", new[] { "--socket", "s.sock", "--size", "12q" }, "hci-hosttype: --size 12q: expected a positive size in bytes, optionally with k, m, g or t")]
    [InlineData("Hci.Samples.HostType", "hci-hosttype.dll", new[] { "--socket", "s.sock", "--frobnicate" }, "hci-hosttype: unknown option --frobnicate (see --help)")]
    [InlineData("Hci.Samples.HostType", "hci-hosttype.dll", new string[0], "hci-hosttype: no volume: give --socket PATH with --backing FILE or --size BYTES")]
    [InlineData("Hci.Samples.HostType", "hci-hosttype.dll", new[] { "--config", "missing.json" }, "hci-hosttype: --config missing.json: The configuration file 'missing.json' was not found")]
    [InlineData("Hci.Samples.Hybrid", "hci-hybrid.dll", new[] { "--vm-socket", "v.sock", "--backing", "b.img", "--container-allow", "uid:alice" }, "hci-hybrid: --container-allow uid:alice: expected uid:N or gid:N (a number, e.g. uid:1000)")]
    [InlineData("Hci.Samples.Hybrid", "hci-hybrid.dll", new[] { "--data-dir", "d", "--node", "n1", "--device", "x.img:1g" }, "hci-hybrid: a cluster node needs --socket-dir DIR")]
    [InlineData("Hci.Samples.Hybrid", "hci-hybrid.dll", new[] { "--vm-socket", "v.sock", "--backing", "b.img", "--latency-tolerance", "-1" }, "hci-hybrid: --latency-tolerance -1: expected a number from 0 to 10")]
    [InlineData("Hci.Samples.Hybrid", "hci-hybrid.dll", new[] { "--vm-socket", "v.sock", "--backing", "b.img", "--latency-tolerance", "10.5" }, "hci-hybrid: --latency-tolerance 10.5: expected a number from 0 to 10")]
    [InlineData("Hci.Samples.Hybrid", "hci-hybrid.dll", new[] { "--vm-socket", "v.sock", "--backing", "b.img", "--latency-tolerance", "NaN" }, "hci-hybrid: --latency-tolerance NaN: expected a number from 0 to 10")]
    [InlineData("Hci.Samples.HostType", "hci-hosttype.dll", new[] { "--data-dir", "d", "--node", "n1", "--device", "x.img:1g", "--recovery-latency-factor", "1" }, "hci-hosttype: --recovery-latency-factor 1: '1' is not a factor: give a number more than 1 and at most 100 (e.g. 1.5, 3) or fixed")]
    [InlineData("Hci.Samples.HostType", "hci-hosttype.dll", new[] { "--data-dir", "d", "--node", "n1", "--device", "x.img:1g", "--recovery-rate", "1k" }, "hci-hosttype: --recovery-rate 1k: '1k' is not a rate: give bytes per second of at least 4096 (e.g. 64M, 200M) or off")]
    [InlineData("Hci.Samples.VmType", "hci-vmtype.dll", new[] { "--iqn", "iqn.2026-01.org.example:t", "--size", "4m", "--ioengine", "memory" }, "hci-vmtype: no authentication: give --chap-user with --chap-secret-file (or HCI_CHAP_SECRET), or --insecure")]
    [InlineData("Hci.Samples.VmType", "hci-vmtype.dll", new[] { "--iqn", "iqn.2026-01.org.example:t", "--insecure", "--lun", "16384" }, "hci-vmtype: --lun 16384: expected a whole number from 0 to 16383")]
    [InlineData("Hci.Samples.VmType", "hci-vmtype.dll", new[] { "--insecure", "--size", "4m" }, "hci-vmtype: --iqn IQN is required")]
    [InlineData("Hci.Bench", "hci-bench.dll", new[] { "--ioengine=null", "--size=1m", "--iodepth=0" }, "hci-bench: --iodepth=0: expected a whole number from 1 to 4096")]
    [InlineData("Hci.Bench", "hci-bench.dll", new[] { "contention", "--scheduler", "wfq" }, "hci-bench contention: --scheduler=wfq is not supported: use fifo, limits, mclock or hybrid")]
    public async Task AMistakeIsSaidWithWhatToDoAndExitCode2(string project, string dll, string[] args, string expected)
    {
        var (code, output) = await RunAsync("dotnet", [Built(project, dll), .. args]);

        Assert.Equal(2, code);
        Assert.Contains(expected, output);
    }

    [Fact]
    public async Task AMisspelledSettingInTheEnvironmentIsRefusedNotIgnored()
    {
        var (code, output) = await RunAsync("dotnet", [Built("Hci.Samples.Hybrid", "hci-hybrid.dll"), "--vm-socket", "v.sock", "--ioengine", "null", "--size", "1m"], new() { ["HCI_HYBRID_REACTOR"] = "2" });

        Assert.Equal(2, code);
        Assert.Contains("hci-hybrid: unknown setting 'REACTOR' (from --config or HCI_HYBRID_REACTOR)", output);
    }

    /// <summary>Starts a host, waits (at most a minute) for <paramref name="ready"/> in its log, stops it with SIGTERM
    /// as systemd and the rigs do, and returns its exit code and whole log.</summary>
    private async Task<(int Code, string Log)> ServeAsync(string project, string dll, string[] args, string ready, Dictionary<string, string>? environment = null)
    {
        await using var host = SampleHostProcess.Start(Built(project, dll), args, environment, _dir);
        await host.WaitForLogAsync(ready);
        int code = await host.TerminateAsync();
        return (code, host.Log);
    }
}
