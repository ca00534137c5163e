using Hci.Core.Devices;
using Hci.Core.Reactors;
using Hci.Core.Replication;
using Hci.Core.Storage;

namespace Hci.Testing.Replication;

/// <summary>
/// Several nodes' replica stores in one process, each on its own memory device, reached through their real
/// <see cref="ReplicaNode"/>s (no network): the replication logic's tests run on real stores, and
/// <see cref="Connector"/> (a <see cref="FaultyReplicaConnector"/>) cuts nodes off.
/// </summary>
public sealed class InProcessReplicaCluster : IDisposable
{
    private readonly Dictionary<string, ReplicaNode> _nodes = [];

    private InProcessReplicaCluster()
    {
        Connector = new FaultyReplicaConnector(new Router(this));
    }

    /// <summary>The way to every node, with faults the test injects.</summary>
    public FaultyReplicaConnector Connector { get; }

    /// <summary>The nodes' ids, node1 to nodeN.</summary>
    public IReadOnlyList<string> NodeIds => [.. _nodes.Keys];

    /// <summary>The memory devices under each node's store.</summary>
    public Dictionary<string, MemoryBlockDevice> Devices { get; } = [];

    /// <summary>One node's stores.</summary>
    public ReplicaNode Node(string id) => _nodes[id];

    /// <summary>Makes <paramref name="nodes"/> nodes with one store each of <paramref name="deviceBytes"/>.</summary>
    public static async Task<InProcessReplicaCluster> StartAsync(int nodes, long deviceBytes = 64L << 20, long extentSize = ReplicaGeometry.DefaultExtentSize)
    {
        var cluster = new InProcessReplicaCluster();
        for (int i = 1; i <= nodes; i++)
        {
            string id = $"node{i}";
            var device = new MemoryBlockDevice(deviceBytes);
            cluster.Devices[id] = device;
            cluster._nodes[id] = await ReplicaNode.OpenAsync(id, [device], new ReplicaStoreOptions { ExtentSize = extentSize });
        }

        return cluster;
    }

    /// <summary>Replica sets over all nodes, device 0 each, the first <paramref name="replicas"/> nodes.</summary>
    public Func<long, IReadOnlyList<ReplicaTarget>> Placement(int replicas)
        => _ => [.. _nodes.Keys.Take(replicas).Select(n => new ReplicaTarget(n, 0, Hci.Core.Cluster.ReplicaState.InSync))];

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var node in _nodes.Values)
        {
            node.Dispose();
        }

        foreach (var device in Devices.Values)
        {
            device.Dispose();
        }
    }

    private sealed class Router(InProcessReplicaCluster cluster) : IReplicaConnector
    {
        public ReplicaChannel Open(string nodeId, Reactor? reactor) => cluster._nodes[nodeId].Open(nodeId, reactor);
    }
}
