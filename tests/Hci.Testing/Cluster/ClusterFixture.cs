using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Hci.Transport.Replication;

namespace Hci.Testing;

/// <summary>
/// A whole cluster of real processes for scenario tests: a real etcd of its own (<see cref="EtcdServer"/>), a cluster
/// key (mode 0600), and N <c>hci-hosttype</c> nodes on 127.0.0.1, each with its own port, directory, device file and
/// failure domain (<c>host1..N</c>); or the embedded variant, one node on the local store (<c>--data-dir</c>) with
/// several device files. It runs the admin tool <c>hci</c> against the store, and always cleans up: disposing kills
/// every process it started and deletes its directory, whatever the test did.
/// </summary>
/// <remarks>The binaries are the ones the test project builds through its project references, in the test's own
/// configuration: <c>samples/Hci.Samples.HostType/bin/CONFIG/net10.0/hci-hosttype.dll</c> and
/// <c>samples/Hci.Cli/bin/CONFIG/net10.0/hci.dll</c>.</remarks>
public sealed partial class ClusterFixture : IAsyncDisposable
{
    /// <summary>The size of each node's device file unless the test chooses.</summary>
    public const long DefaultDeviceSize = 256L << 20;

    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly List<ClusterNodeProcess> _nodes = [];
    private readonly string[] _storeArguments;

    private ClusterFixture(string directory, EtcdServer? etcd, string[] storeArguments)
    {
        Directory = directory;
        Etcd = etcd;
        _storeArguments = storeArguments;
    }

    /// <summary>The fixture's directory (the key, every node's directory, the local store); deleted on dispose.</summary>
    public string Directory { get; }

    /// <summary>The etcd the nodes use, or null for the embedded variant.</summary>
    public EtcdServer? Etcd { get; }

    /// <summary>The cluster key file (mode 0600), or null for the embedded variant.</summary>
    public string? KeyFile { get; private set; }

    /// <summary>The local store's directory (embedded variant), or null.</summary>
    public string? DataDirectory { get; private set; }

    /// <summary>The nodes, <c>node1..N</c>.</summary>
    public IReadOnlyList<ClusterNodeProcess> Nodes => _nodes;

    /// <summary>The time since the fixture started: the clock of every <see cref="NodeLogLine.At"/>.</summary>
    public TimeSpan Now => _clock.Elapsed;

    /// <summary>The node with id <paramref name="id"/>.</summary>
    /// <param name="id">Such as <c>node2</c>.</param>
    public ClusterNodeProcess this[string id] => _nodes.Single(n => n.Id == id);

    /// <summary>Starts etcd and <paramref name="nodes"/> nodes (<c>node1..N</c> in domains <c>host1..N</c>, one device
    /// file each) and waits until every node is ready.</summary>
    /// <param name="nodes">How many nodes.</param>
    /// <param name="deviceSize">Each node's device file size.</param>
    /// <param name="nodeArguments">More arguments for every node's host (such as <c>--rebuild-after 5s</c>).</param>
    /// <returns>The running cluster.</returns>
    public static async Task<ClusterFixture> StartAsync(int nodes, long deviceSize = DefaultDeviceSize, IReadOnlyList<string>? nodeArguments = null)
    {
        string dir = System.IO.Directory.CreateTempSubdirectory("hci-cluster-").FullName;
        EtcdServer? etcd = null;
        ClusterFixture? fixture = null;
        try
        {
            etcd = await EtcdServer.StartAsync().ConfigureAwait(false);
            fixture = new ClusterFixture(dir, etcd, ["--etcd", etcd.ClientUrl]);
            fixture.KeyFile = Path.Combine(dir, "cluster.key");
            ClusterKey.Generate(fixture.KeyFile);
            string host = Binaries.HostDll;
            for (int i = 1; i <= nodes; i++)
            {
                string id = string.Create(CultureInfo.InvariantCulture, $"node{i}");
                string nodeDir = System.IO.Directory.CreateDirectory(Path.Combine(dir, id)).FullName;
                string device = Path.Combine(nodeDir, "dev0.img");
                fixture._nodes.Add(new ClusterNodeProcess(host, id, nodeDir, [device], [
                    "--etcd", etcd.ClientUrl, "--node", id, "--listen", $"127.0.0.1:{FreePort()}",
                    "--domain", string.Create(CultureInfo.InvariantCulture, $"host{i}"),
                    "--device", string.Create(CultureInfo.InvariantCulture, $"{device}:{deviceSize}"),
                    "--cluster-key-file", fixture.KeyFile, "--socket-dir", Path.Combine(nodeDir, "sock"),
                    .. nodeArguments ?? [],
                ], fixture._clock));
            }

            // Started one after the other: on a 2-core machine the nodes' JIT start-up would otherwise starve etcd.
            foreach (var node in fixture._nodes)
            {
                await node.StartAsync().ConfigureAwait(false);
            }

            return fixture;
        }
        catch
        {
            if (fixture is not null)
            {
                await fixture.DisposeAsync().ConfigureAwait(false);
            }
            else
            {
                if (etcd is not null)
                {
                    await etcd.DisposeAsync().ConfigureAwait(false);
                }

                System.IO.Directory.Delete(dir, recursive: true);
            }

            throw;
        }
    }

    /// <summary>The embedded variant: one node <c>node1</c> on the local store (<c>--data-dir</c>) with
    /// <paramref name="devices"/> device files, so that a volume's replicas sit on local devices (failure domain level
    /// device). The node is not started: call <see cref="ClusterNodeProcess.StartAsync"/>.</summary>
    /// <param name="devices">How many device files.</param>
    /// <param name="deviceSize">Each device file's size.</param>
    /// <returns>The fixture.</returns>
    public static ClusterFixture CreateEmbedded(int devices, long deviceSize = DefaultDeviceSize)
    {
        string dir = System.IO.Directory.CreateTempSubdirectory("hci-embedded-").FullName;
        string data = Path.Combine(dir, "store");
        var fixture = new ClusterFixture(dir, null, ["--data-dir", data]) { DataDirectory = data };
        string nodeDir = System.IO.Directory.CreateDirectory(Path.Combine(dir, "node1")).FullName;
        var files = Enumerable.Range(0, devices).Select(i => Path.Combine(nodeDir, string.Create(CultureInfo.InvariantCulture, $"dev{i}.img"))).ToArray();
        var args = new List<string> { "--data-dir", data, "--node", "node1", "--socket-dir", Path.Combine(nodeDir, "sock") };
        foreach (string file in files)
        {
            args.Add("--device");
            args.Add(string.Create(CultureInfo.InvariantCulture, $"{file}:{deviceSize}"));
        }

        fixture._nodes.Add(new ClusterNodeProcess(Binaries.HostDll, "node1", nodeDir, files, args, fixture._clock));
        return fixture;
    }

    /// <summary>Runs <c>hci</c> against the cluster's store and returns its exit code and output.</summary>
    /// <param name="args">The command, such as <c>volume status v --json</c>.</param>
    /// <returns>The exit code, standard output and standard error.</returns>
    public async Task<HciResult> TryHciAsync(params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Binaries.HciDll);
        foreach (string arg in _storeArguments.Concat(args))
        {
            psi.ArgumentList.Add(arg);
        }

        using var process = Process.Start(psi)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try
        {
            await process.WaitForExitAsync(timeout.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            process.Kill();
            throw new TimeoutException($"hci {string.Join(' ', args)} did not finish within 60 s");
        }

        return new HciResult(process.ExitCode, await output.ConfigureAwait(false), await error.ConfigureAwait(false));
    }

    /// <summary>Runs <c>hci</c> and fails, with its output, unless it exits with 0.</summary>
    /// <param name="args">The command.</param>
    /// <returns>Its standard output.</returns>
    public async Task<string> HciAsync(params string[] args)
    {
        var result = await TryHciAsync(args).ConfigureAwait(false);
        if (result.ExitCode != 0)
        {
            throw new InvalidOperationException($"hci {string.Join(' ', args)} exited with {result.ExitCode}: {result.Error}{result.Output}");
        }

        return result.Output;
    }

    /// <summary>Creates a volume with <c>hci volume create</c>.</summary>
    /// <param name="name">The volume's name.</param>
    /// <param name="size">Its size in bytes.</param>
    /// <param name="replicas">How many replicas.</param>
    /// <returns>The volume's id (what the replica stores know it by).</returns>
    public async Task<ulong> CreateVolumeAsync(string name, long size, int replicas = 3)
    {
        await HciAsync("volume", "create", name, "--size", size.ToString(CultureInfo.InvariantCulture), "--replicas", replicas.ToString(CultureInfo.InvariantCulture)).ConfigureAwait(false);
        return (await VolumeStatusAsync(name).ConfigureAwait(false)).Id;
    }

    /// <summary>Attaches a volume to a node with <c>hci volume attach</c> and, when the node runs, waits until it
    /// serves the volume's socket.</summary>
    /// <param name="name">The volume.</param>
    /// <param name="node">The new owner.</param>
    /// <param name="force">Take it from a current owner (<c>--force</c>).</param>
    /// <returns>The socket the owner serves the volume on.</returns>
    public async Task<string> AttachAsync(string name, string node, bool force = false)
    {
        var owner = this[node];
        int mark = owner.LineCount;
        await HciAsync(force ? ["volume", "attach", name, "--node", node, "--force"] : ["volume", "attach", name, "--node", node]).ConfigureAwait(false);
        if (owner.IsRunning)
        {
            await WaitServedAsync(owner, name, mark).ConfigureAwait(false);
        }

        return owner.SocketPath(name);
    }

    /// <summary>Waits until <paramref name="node"/> logs that it serves <paramref name="volume"/> (after line
    /// <paramref name="from"/>).</summary>
    /// <param name="node">The owner.</param>
    /// <param name="volume">The volume.</param>
    /// <param name="from">A <see cref="ClusterNodeProcess.LineCount"/> taken before.</param>
    /// <returns>The line.</returns>
    public static Task<NodeLogLine> WaitServedAsync(ClusterNodeProcess node, string volume, int from) =>
        node.WaitForLineAsync(l => l.Contains($"serves replicated volume {volume} ", StringComparison.Ordinal), $"{node.Id} to serve volume {volume}", from);

    /// <summary>Parses <c>hci volume status NAME --json</c>.</summary>
    /// <param name="name">The volume.</param>
    /// <returns>Its status.</returns>
    public async Task<VolumeStatus> VolumeStatusAsync(string name)
    {
        string json = await HciAsync("volume", "status", name, "--json").ConfigureAwait(false);
        return VolumeStatus.Parse(json);
    }

    /// <summary>Polls <c>hci volume status</c> until the volume is healthy (every extent has every replica in sync).</summary>
    /// <param name="name">The volume.</param>
    /// <param name="deadline">How long to wait; <see cref="Deadline.Default"/> if null.</param>
    /// <returns>The healthy status.</returns>
    public async Task<VolumeStatus> WaitHealthyAsync(string name, TimeSpan? deadline = null)
    {
        var limit = deadline ?? Deadline.Default;
        var watch = Stopwatch.StartNew();
        while (true)
        {
            var status = await VolumeStatusAsync(name).ConfigureAwait(false);
            if (status.Healthy)
            {
                return status;
            }

            if (watch.Elapsed > limit)
            {
                throw new TimeoutException($"volume {name} was not healthy within {limit.TotalSeconds:0.#} s: {status.Json}\n{string.Join('\n', _nodes.Select(n => n.Tail))}");
            }

            await Task.Delay(50).ConfigureAwait(false);
        }
    }

    /// <summary>The last lines of every node, for failure messages.</summary>
    public string Tails => string.Join('\n', _nodes.Select(n => n.Tail));

    /// <summary>Kills every node and etcd and deletes the directory; never throws for what was already gone.</summary>
    /// <returns>A task that completes when everything is gone.</returns>
    public async ValueTask DisposeAsync()
    {
        foreach (var node in _nodes)
        {
            await node.DisposeAsync().ConfigureAwait(false);
        }

        if (Etcd is not null)
        {
            await Etcd.DisposeAsync().ConfigureAwait(false);
        }

        // The etcd cluster and the network namespaces of a partition test (ClusterFixture.Faults.cs), after the nodes.
        await DisposeFaultRigAsync().ConfigureAwait(false);

        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (DirectoryNotFoundException)
        {
        }
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <summary>Where the sample binaries the test project built lie.</summary>
    private static class Binaries
    {
        public static string HostDll => Find("Hci.Samples.HostType", "hci-hosttype.dll");

        public static string HciDll => Find("Hci.Cli", "hci.dll");

        private static string Find(string project, string dll)
        {
            // The test runs from bin/<configuration>/net10.0: the samples were built in the same configuration.
            string configuration = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)).Parent!.Name;
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            {
                if (File.Exists(Path.Combine(dir.FullName, "Hci.sln")))
                {
                    string path = Path.Combine(dir.FullName, "samples", project, "bin", configuration, "net10.0", dll);
                    return File.Exists(path) ? path : throw new InvalidOperationException($"{path} is missing: build {project} ({configuration}); the scenario tests' project references build it.");
                }
            }

            throw new InvalidOperationException("The repository root (Hci.sln) is not above the test's directory.");
        }
    }
}

/// <summary>What a run of <c>hci</c> returned.</summary>
/// <param name="ExitCode">The exit code.</param>
/// <param name="Output">Standard output.</param>
/// <param name="Error">Standard error.</param>
public readonly record struct HciResult(int ExitCode, string Output, string Error);

/// <summary>A replica of an extent as <c>hci volume status --json</c> shows it.</summary>
/// <param name="Node">The node.</param>
/// <param name="Device">The device index on that node.</param>
/// <param name="State"><c>in-sync</c>, <c>out-of-sync</c> or <c>resyncing</c>.</param>
public readonly record struct ReplicaStatusEntry(string Node, int Device, string State);

/// <summary>A volume as <c>hci volume status --json</c> shows it.</summary>
/// <param name="Id">The volume's id.</param>
/// <param name="Healthy">True when every extent has all its replicas in sync.</param>
/// <param name="ExtentSize">The extent size in bytes.</param>
/// <param name="Owner">The owner, or null.</param>
/// <param name="Epoch">The ownership epoch.</param>
/// <param name="Extents">Each allocated extent's replicas, by extent index.</param>
/// <param name="Json">The raw output.</param>
public sealed record VolumeStatus(ulong Id, bool Healthy, long ExtentSize, string? Owner, ulong Epoch, IReadOnlyDictionary<long, IReadOnlyList<ReplicaStatusEntry>> Extents, string Json)
{
    /// <summary>Parses the tool's JSON.</summary>
    /// <param name="json">The output of <c>hci volume status NAME --json</c>.</param>
    /// <returns>The status.</returns>
    public static VolumeStatus Parse(string json)
    {
        using var doc = JsonDocument.Parse(json);
        var root = doc.RootElement;
        var extents = new SortedDictionary<long, IReadOnlyList<ReplicaStatusEntry>>();
        if (root.TryGetProperty("extents", out var list))
        {
            foreach (var extent in list.EnumerateArray())
            {
                extents[extent.GetProperty("index").GetInt64()] = [.. extent.GetProperty("replicas").EnumerateArray().Select(r =>
                    new ReplicaStatusEntry(r.GetProperty("node").GetString()!, r.GetProperty("device").GetInt32(), r.GetProperty("state").GetString()!))];
            }
        }

        return new VolumeStatus(
            root.GetProperty("id").GetUInt64(),
            root.GetProperty("healthy").GetBoolean(),
            root.GetProperty("extentSize").GetInt64(),
            root.TryGetProperty("owner", out var owner) && owner.ValueKind == JsonValueKind.String ? owner.GetString() : null,
            root.GetProperty("epoch").GetUInt64(),
            extents,
            json);
    }
}
