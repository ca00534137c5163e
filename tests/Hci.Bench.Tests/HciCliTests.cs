using System.Diagnostics;
using System.Text.Json;
using Hci.Core.Cluster;

namespace Hci.Bench.Tests;

/// <summary>The admin tool <c>hci</c>, run as a real process on a temporary local cluster store.</summary>
public sealed class HciCliTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), $"hci-cli-{Guid.NewGuid():N}");

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

    private static string HciDll()
    {
        string configuration = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)).Parent!.Name; // bin/<configuration>/net10.0
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Hci.sln")))
            {
                string dll = Path.Combine(dir.FullName, "samples", "Hci.Cli", "bin", configuration, "net10.0", "hci.dll");
                Assert.True(File.Exists(dll), $"{dll} is missing: build Hci.Cli ({configuration})");
                return dll;
            }
        }

        throw new InvalidOperationException("The repository root (Hci.sln) is not above the test's directory.");
    }

    private async Task<(int Code, string Output, string Error)> Hci(params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(HciDll());
        psi.ArgumentList.Add("--data-dir");
        psi.ArgumentList.Add(_dir);
        foreach (string arg in args)
        {
            psi.ArgumentList.Add(arg);
        }

        using var process = Process.Start(psi)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await process.WaitForExitAsync(timeout.Token);
        return (process.ExitCode, await output, await error);
    }

    /// <summary>Registers nodes in the store as hosts would (the tool itself does not register nodes).</summary>
    private async Task<ClusterCatalog> WithCatalogAsync(Func<ClusterCatalog, Task> action)
    {
        await using var store = LocalClusterStore.Open(_dir);
        var catalog = new ClusterCatalog(store);
        await action(catalog);
        return catalog;
    }

    private Task RegisterNodesAsync(int count) => WithCatalogAsync(async catalog =>
    {
        for (int i = 1; i <= count; i++)
        {
            await catalog.RegisterNodeAsync(new NodeRecord
            {
                Id = $"node{i}",
                Address = $"127.0.0.1:{7400 + i}",
                Domain = $"host{i}",
                Devices = [new DeviceRecord { Index = 0, Capacity = 1L << 30, Weight = 1 }],
            });
        }
    });

    [Fact]
    public async Task AVolumeIsCreatedListedAttachedResizedDetachedAndDeleted()
    {
        await RegisterNodesAsync(3);
        var (code, output, error) = await Hci("volume", "create", "vm1-disk", "--size", "1G", "--replicas", "3", "--domain-level", "host");
        Assert.True(code == 0, error);
        Assert.Contains("created volume vm1-disk", output);

        (code, output, error) = await Hci("volume", "list", "--json");
        Assert.True(code == 0, error);
        using (var list = JsonDocument.Parse(output))
        {
            var volume = Assert.Single(list.RootElement.EnumerateArray());
            Assert.Equal("vm1-disk", volume.GetProperty("name").GetString());
            Assert.Equal(1L << 30, volume.GetProperty("size").GetInt64());
            Assert.Equal(3, volume.GetProperty("replicas").GetInt32());
            Assert.Equal("host", volume.GetProperty("domainLevel").GetString());
        }

        (code, output, error) = await Hci("volume", "attach", "vm1-disk", "--node", "node2");
        Assert.True(code == 0, error);
        Assert.Contains("attached to node2 (epoch 1)", output);

        // While node2's membership lease holds (this test holds it, as node2's host would), the volume stays there
        // unless forced; once the lease is gone, node2 is down and the volume moves without --force.
        await using (var store = LocalClusterStore.Open(_dir))
        {
            await using var lease = await store.GrantLeaseAsync(TimeSpan.FromSeconds(30));
            await new ClusterCatalog(store).SetAliveAsync("node2", lease);
            (code, _, error) = await Hci("volume", "attach", "vm1-disk", "--node", "node3");
            Assert.Equal(1, code);
            Assert.Contains("attached to node 'node2', which is alive", error);
            Assert.Contains("--force", error);
        }

        (code, output, error) = await Hci("volume", "attach", "vm1-disk", "--node", "node3");
        Assert.True(code == 0, error);
        Assert.Contains("attached to node3 (epoch 2)", output);

        (code, output, error) = await Hci("volume", "resize", "vm1-disk", "--size", "2G");
        Assert.True(code == 0, error);
        Assert.Contains("2 GiB", output);
        (code, _, error) = await Hci("volume", "resize", "vm1-disk", "--size", "512M");
        Assert.Equal(1, code);
        Assert.Contains("volumes only grow", error);

        (code, _, error) = await Hci("volume", "delete", "vm1-disk");
        Assert.Equal(1, code);
        Assert.Contains("detach it first", error);
        (code, _, error) = await Hci("volume", "detach", "vm1-disk");
        Assert.True(code == 0, error);
        (code, _, error) = await Hci("volume", "delete", "vm1-disk");
        Assert.True(code == 0, error);
        (code, output, _) = await Hci("volume", "list");
        Assert.Equal(0, code);
        Assert.Contains("no volumes", output);
    }

    [Fact]
    public async Task VolumeStatusJsonShowsExtentsReplicasAndHealth()
    {
        await RegisterNodesAsync(3);
        Assert.Equal(0, (await Hci("volume", "create", "v", "--size", "64M", "--domain-level", "host")).Code);
        Assert.Equal(0, (await Hci("volume", "attach", "v", "--node", "node1")).Code);

        // The owner allocates two extents and marks one replica out of sync, as the replication logic would.
        ReplicaRecord? marked = null;
        await WithCatalogAsync(async catalog =>
        {
            var volume = (await catalog.GetVolumeAsync("v"))!;
            await catalog.AllocateExtentAsync(volume, 0);
            var extent = await catalog.AllocateExtentAsync(volume, 3);
            marked = extent.Replicas[2];
            await catalog.MarkReplicaStateAsync("v", 3, marked.NodeId, marked.Device, ReplicaState.OutOfSync, volume.Epoch);
        });

        var (code, output, error) = await Hci("volume", "status", "v", "--json");
        Assert.True(code == 0, error);
        using var doc = JsonDocument.Parse(output);
        var root = doc.RootElement;
        Assert.Equal("v", root.GetProperty("name").GetString());
        Assert.Equal(64L << 20, root.GetProperty("size").GetInt64());
        Assert.Equal(3, root.GetProperty("replicas").GetInt32());
        Assert.False(root.GetProperty("healthy").GetBoolean());
        Assert.Equal(2, root.GetProperty("epoch").GetInt64()); // attach, then the out-of-sync mark
        var extents = root.GetProperty("extents").EnumerateArray().ToArray();
        Assert.Equal([0L, 3L], extents.Select(e => e.GetProperty("index").GetInt64()));
        var replicas = extents[1].GetProperty("replicas").EnumerateArray().ToArray();
        Assert.Equal(3, replicas.Length);
        Assert.Equal(["in-sync", "in-sync", "out-of-sync"], replicas.Select(r => r.GetProperty("state").GetString()));
        Assert.Equal(marked!.NodeId, replicas[2].GetProperty("node").GetString());
        Assert.Equal(marked.Device, replicas[2].GetProperty("device").GetInt32());

        (code, output, _) = await Hci("volume", "status", "v");
        Assert.Equal(0, code);
        Assert.Contains("2 of 16 extents", output);
        Assert.Contains("degraded (1 extents", output);
    }

    [Fact]
    public async Task ClusterStatusListsNodesAndDevices()
    {
        await RegisterNodesAsync(2);
        var (code, output, error) = await Hci("cluster", "status", "--json");
        Assert.True(code == 0, error);
        using var doc = JsonDocument.Parse(output);
        var nodes = doc.RootElement.GetProperty("nodes").EnumerateArray().ToArray();
        Assert.Equal(["node1", "node2"], nodes.Select(n => n.GetProperty("id").GetString()));
        Assert.Equal("host2", nodes[1].GetProperty("domain").GetString());
        Assert.False(nodes[0].GetProperty("alive").GetBoolean()); // no host runs: nobody holds a lease
        Assert.Equal(1L << 30, nodes[0].GetProperty("devices")[0].GetProperty("capacity").GetInt64());

        (code, output, _) = await Hci("cluster", "status");
        Assert.Equal(0, code);
        Assert.Contains("0 of 2 nodes up, 2 devices (2 GiB), 0 volumes", output);
    }

    [Fact]
    public async Task ClusterStatusShowsDamagedRebuildProgressRecordsWithoutFailing()
    {
        await RegisterNodesAsync(2);
        foreach (string volume in new[] { "over", "negative", "tiny-rate" })
        {
            Assert.Equal(0, (await Hci("volume", "create", volume, "--size", "1G", "--replicas", "2")).Code);
        }

        await using (var store = LocalClusterStore.Open(_dir))
        {
            var catalog = new ClusterCatalog(store);
            foreach (var (volume, done, total, rate) in new[] { ("over", 10L << 30, 1L << 30, 1e6), ("negative", -5L, 1L << 30, 1e6), ("tiny-rate", 0L, 1L << 30, 1e-300) })
            {
                await catalog.PutRebuildProgressAsync(new RebuildProgress { Volume = volume, Owner = "node1", ExtentsTotal = 1, BytesDone = done, BytesTotal = total, BytesPerSecond = rate, UpdatedAt = DateTimeOffset.UtcNow });
            }
        }

        var (code, output, error) = await Hci("cluster", "status");
        Assert.True(code == 0, error);
        Assert.Contains("rebuild over (owner node1): 100.0%", output);
        Assert.Contains("rebuild negative (owner node1): 0.0%", output);
        Assert.Contains("ETA unknown", output);
    }

    [Fact]
    public async Task ClusterStatusShowsARebuildWhoseOwnerStoppedReportingAsStalledWithoutAnEta()
    {
        await RegisterNodesAsync(2);
        Assert.Equal(0, (await Hci("volume", "create", "v", "--size", "1G", "--replicas", "2")).Code);
        Assert.Equal(0, (await Hci("volume", "create", "w", "--size", "1G", "--replicas", "2")).Code);
        var started = DateTimeOffset.UtcNow - TimeSpan.FromMinutes(5);
        await using (var store = LocalClusterStore.Open(_dir))
        {
            var catalog = new ClusterCatalog(store);

            // v's owner was killed a minute ago in the middle of its rebuild; w's reported a second ago.
            await catalog.PutRebuildProgressAsync(new RebuildProgress { Volume = "v", Owner = "node1", ExtentsTotal = 8, ExtentsDone = 3, BytesTotal = 8L << 22, BytesDone = 3L << 22, BytesPerSecond = 4e6, StartedAt = started, UpdatedAt = DateTimeOffset.UtcNow - TimeSpan.FromMinutes(1) });
            await catalog.PutRebuildProgressAsync(new RebuildProgress { Volume = "w", Owner = "node2", ExtentsTotal = 8, ExtentsDone = 3, BytesTotal = 8L << 22, BytesDone = 3L << 22, BytesPerSecond = 4e6, StartedAt = started, UpdatedAt = DateTimeOffset.UtcNow });
        }

        var (code, output, error) = await Hci("cluster", "status");
        Assert.True(code == 0, error);
        var v = Assert.Single(output.Split('\n'), l => l.StartsWith("rebuild v ", StringComparison.Ordinal));
        Assert.Contains("3/8 extents", v);
        Assert.Contains("stalled: no report from its owner since", v);
        Assert.DoesNotContain("ETA", v);
        var w = Assert.Single(output.Split('\n'), l => l.StartsWith("rebuild w ", StringComparison.Ordinal));
        Assert.Contains("ETA 5s", w);
        Assert.DoesNotContain("stalled", w);

        (code, output, error) = await Hci("cluster", "status", "--json");
        Assert.True(code == 0, error);
        using var json = System.Text.Json.JsonDocument.Parse(output);
        var rebuilds = json.RootElement.GetProperty("rebuilds").EnumerateArray().ToDictionary(r => r.GetProperty("volume").GetString()!);
        Assert.True(rebuilds["v"].GetProperty("stalled").GetBoolean());
        Assert.False(rebuilds["v"].TryGetProperty("etaSeconds", out _));
        Assert.False(rebuilds["w"].GetProperty("stalled").GetBoolean());
        Assert.Equal(5.2, rebuilds["w"].GetProperty("etaSeconds").GetDouble());
    }

    [Fact]
    public async Task CreatingAVolumeWithoutDevicesSaysThatPlacementNeedsThem()
    {
        var (code, _, error) = await Hci("volume", "create", "v", "--size", "1G", "--replicas", "2");
        Assert.Equal(1, code);
        Assert.Contains("placement needs devices", error);
        Assert.Contains("--device", error);
    }

    [Theory]
    [InlineData(new[] { "volume", "create", "v", "--size", "12q" }, "is not a size")]
    [InlineData(new[] { "volume", "create", "v" }, "--size is required")]
    [InlineData(new[] { "volume", "create", "Bad_Name", "--size", "1G" }, "not a valid volume name")]
    [InlineData(new[] { "volume", "attach", "v" }, "--node is required")]
    [InlineData(new[] { "volume", "status" }, "needs the volume's name")]
    [InlineData(new[] { "volume", "frobnicate" }, "unknown command 'volume frobnicate'")]
    [InlineData(new[] { "volume", "list", "--colour", "red" }, "unknown option --colour")]
    [InlineData(new[] { "volume", "status", "nothing" }, "no volume named 'nothing'")]
    public async Task MistakesAreRefusedWithAMessageThatSaysWhatToFix(string[] args, string message)
    {
        var (code, _, error) = await Hci(args);
        Assert.NotEqual(0, code);
        Assert.Contains(message, error);
    }

    [Fact]
    public async Task AnEtcdThatDoesNotAnswerIsAClearErrorNotAHang()
    {
        // A port nothing listens on: the tool must say that etcd did not answer and how to start one.
        using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        int port = ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (string arg in new[] { HciDll(), "--etcd", $"http://127.0.0.1:{port}", "volume", "list" })
        {
            psi.ArgumentList.Add(arg);
        }

        using var process = Process.Start(psi)!;
        string error = await process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
        Assert.NotEqual(0, process.ExitCode);
        Assert.Contains($"127.0.0.1:{port}", error);
        Assert.Contains("etcd", error, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public async Task TheToolWorksBesideAnotherProcessThatHasTheStoreOpenAndSeesItsLiveNode()
    {
        await using var store = LocalClusterStore.Open(_dir);
        var catalog = new ClusterCatalog(store);
        await catalog.RegisterNodeAsync(new NodeRecord { Id = "node1", Address = "127.0.0.1:7401", Domain = "host1", Devices = [new DeviceRecord { Index = 0, Capacity = 1L << 30, Weight = 1 }] });
        var lease = await store.GrantLeaseAsync(TimeSpan.FromSeconds(5));
        await catalog.SetAliveAsync("node1", lease);

        var (code, output, error) = await Hci("cluster", "status");
        Assert.True(code == 0, error);
        Assert.Contains("node1", output);
        Assert.Matches("node1 +up ", output);
        Assert.Single(await catalog.ListNodesAsync(), n => n.Id == "node1");
    }
}
