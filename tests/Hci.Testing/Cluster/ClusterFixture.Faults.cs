using System.Globalization;
using System.Net;
using System.Text.Json;
using Hci.Transport.Replication;

namespace Hci.Testing;

/// <summary>How <see cref="ClusterFixture.StartAsync(ClusterFixtureOptions)"/> lays a cluster out for fault tests.</summary>
public sealed record ClusterFixtureOptions
{
    /// <summary>How many nodes (<c>node1..N</c>, domains <c>host1..N</c>). Default 3.</summary>
    public int Nodes { get; init; } = 3;

    /// <summary>Each node's device file size. Default <see cref="ClusterFixture.DefaultDeviceSize"/>.</summary>
    public long DeviceSize { get; init; } = ClusterFixture.DefaultDeviceSize;

    /// <summary>How many etcd members (an <see cref="Testing.EtcdCluster"/>). Default 3.</summary>
    public int EtcdMembers { get; init; } = 3;

    /// <summary>Put every node and etcd member in a network namespace of its own (a <see cref="NetworkNamespaces"/>
    /// rig), so that the test can cut links; otherwise everything runs on 127.0.0.1. Default true.</summary>
    public bool NetworkNamespaces { get; init; } = true;

    /// <summary>Put a <see cref="FaultProxy"/> in front of every node's replica server and have the node advertise
    /// it (<c>--advertise</c>), so that every connection to the node's replicas passes through it. Default false.</summary>
    public bool Proxies { get; init; }
}

/// <summary>The fault-test layout of the fixture: a multi-member etcd and, optionally, every process in a network
/// namespace of its own.</summary>
public sealed partial class ClusterFixture
{
    /// <summary>The etcd cluster the nodes use (the fault-test layout), or null.</summary>
    public EtcdCluster? EtcdCluster { get; private set; }

    /// <summary>The network rig the nodes and etcd members run in (the fault-test layout with namespaces), or null.
    /// Its hosts are named as the nodes (<c>node1..N</c>) and members (<c>etcd1..N</c>).</summary>
    public NetworkNamespaces? Network { get; private set; }

    /// <summary>The fault proxy in front of each node's replica server, by node id (empty unless
    /// <see cref="ClusterFixtureOptions.Proxies"/>).</summary>
    public IReadOnlyDictionary<string, FaultProxy> Proxies => _proxies;

    private readonly Dictionary<string, FaultProxy> _proxies = [];

    /// <summary>Starts a cluster for fault tests: an <see cref="Testing.EtcdCluster"/> of
    /// <see cref="ClusterFixtureOptions.EtcdMembers"/> members and the nodes, each node and member in a network
    /// namespace of its own when <see cref="ClusterFixtureOptions.NetworkNamespaces"/> (nodes listen on their rig
    /// address, port 7420); waits until every node is ready. The test (the root namespace) reaches etcd and the nodes'
    /// vhost-user sockets.</summary>
    /// <param name="options">The layout.</param>
    /// <returns>The running cluster.</returns>
    public static async Task<ClusterFixture> StartAsync(ClusterFixtureOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        string dir = System.IO.Directory.CreateTempSubdirectory("hci-cluster-").FullName;
        NetworkNamespaces? network = null;
        EtcdCluster? etcd = null;
        ClusterFixture? fixture = null;
        try
        {
            network = options.NetworkNamespaces ? Testing.NetworkNamespaces.Create() : null;
            etcd = await Testing.EtcdCluster.StartAsync(options.EtcdMembers, network).ConfigureAwait(false);
            fixture = new ClusterFixture(dir, null, ["--etcd", etcd.ClientUrls]) { EtcdCluster = etcd, Network = network };
            fixture.KeyFile = Path.Combine(dir, "cluster.key");
            ClusterKey.Generate(fixture.KeyFile);
            string hostDll = Binaries.HostDll;
            for (int i = 1; i <= options.Nodes; i++)
            {
                string id = string.Create(CultureInfo.InvariantCulture, $"node{i}");
                var host = network?.Add(id);
                string nodeDir = System.IO.Directory.CreateDirectory(Path.Combine(dir, id)).FullName;
                string device = Path.Combine(nodeDir, "dev0.img");
                var listen = new IPEndPoint(IPAddress.Parse(host?.Address ?? "127.0.0.1"), host is null ? FreePort() : 7420);
                var arguments = new List<string>
                {
                    "--etcd", etcd.ClientUrls, "--node", id, "--listen", listen.ToString(),
                    "--domain", string.Create(CultureInfo.InvariantCulture, $"host{i}"),
                    "--device", string.Create(CultureInfo.InvariantCulture, $"{device}:{options.DeviceSize}"),
                    "--cluster-key-file", fixture.KeyFile, "--socket-dir", Path.Combine(nodeDir, "sock"),
                };
                if (options.Proxies)
                {
                    // The proxy runs in the test (the root namespace): on the rig's bridge, or on 127.0.0.1.
                    var proxy = FaultProxy.Start(listen, IPAddress.Parse(network?.GatewayAddress ?? "127.0.0.1"));
                    fixture._proxies[id] = proxy;
                    arguments.AddRange(["--advertise", proxy.EndPoint.ToString()]);
                }

                fixture._nodes.Add(new ClusterNodeProcess(hostDll, id, nodeDir, [device], arguments, fixture._clock) { Host = host, CommandPrefix = host?.Exec ?? [] });
            }

            // One after the other: on a 2-core machine the nodes' JIT start-up would otherwise starve etcd.
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

                network?.Dispose();
                System.IO.Directory.Delete(dir, recursive: true);
            }

            throw;
        }
    }

    /// <summary>Which nodes the cluster store lists as alive (their membership lease held), from <c>hci cluster status
    /// --json</c>.</summary>
    /// <returns>Each registered node's id and whether it is alive.</returns>
    public async Task<IReadOnlyDictionary<string, bool>> NodesAliveAsync()
    {
        string json = await HciAsync("cluster", "status", "--json").ConfigureAwait(false);
        using var doc = JsonDocument.Parse(json);
        return doc.RootElement.GetProperty("nodes").EnumerateArray()
            .ToDictionary(n => n.GetProperty("id").GetString()!, n => n.GetProperty("alive").GetBoolean());
    }

    private async Task DisposeFaultRigAsync()
    {
        foreach (var proxy in _proxies.Values)
        {
            await proxy.DisposeAsync().ConfigureAwait(false);
        }

        if (EtcdCluster is not null)
        {
            await EtcdCluster.DisposeAsync().ConfigureAwait(false);
        }

        Network?.Dispose();
    }
}
