namespace Hci.Core.Cluster;

/// <summary>
/// The nodes and devices of the cluster at one epoch (the cluster store's revision when it was read), sorted by id:
/// what <see cref="Placement"/> places over.
/// </summary>
public sealed class ClusterMap
{
    private readonly Dictionary<string, NodeInfo> _nodes;
    private readonly Dictionary<string, DeviceInfo[]> _devicesByNode;

    /// <summary>Creates a map; nodes and devices may come in any order.</summary>
    /// <param name="epoch">The map's epoch.</param>
    /// <param name="nodes">The nodes (unique ids).</param>
    /// <param name="devices">The devices (each on a listed node, unique per node and index).</param>
    /// <exception cref="ArgumentException">A node id repeats, or a device names an unknown node or repeats.</exception>
    public ClusterMap(long epoch, IEnumerable<NodeInfo> nodes, IEnumerable<DeviceInfo> devices)
    {
        ArgumentNullException.ThrowIfNull(nodes);
        ArgumentNullException.ThrowIfNull(devices);
        Epoch = epoch;
        _nodes = new Dictionary<string, NodeInfo>(StringComparer.Ordinal);
        foreach (var node in nodes)
        {
            if (!_nodes.TryAdd(node.Id, node))
            {
                throw new ArgumentException($"Node '{node.Id}' is listed twice in the cluster map.", nameof(nodes));
            }
        }

        var sortedDevices = devices.OrderBy(d => d.NodeId, StringComparer.Ordinal).ThenBy(d => d.Index).ToArray();
        for (int i = 0; i < sortedDevices.Length; i++)
        {
            var device = sortedDevices[i];
            if (!_nodes.ContainsKey(device.NodeId))
            {
                throw new ArgumentException($"Device {device.Id} names node '{device.NodeId}', which is not in the cluster map.", nameof(devices));
            }

            if (i > 0 && sortedDevices[i - 1].NodeId == device.NodeId && sortedDevices[i - 1].Index == device.Index)
            {
                throw new ArgumentException($"Device {device.Id} is listed twice in the cluster map.", nameof(devices));
            }

            if (!(device.Weight >= 0) || double.IsInfinity(device.Weight))
            {
                throw new ArgumentException($"Device {device.Id} has weight {device.Weight}: a weight is a finite number, 0 or more.", nameof(devices));
            }
        }

        Nodes = _nodes.Values.OrderBy(n => n.Id, StringComparer.Ordinal).ToArray();
        Devices = sortedDevices;
        _devicesByNode = sortedDevices.GroupBy(d => d.NodeId, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.ToArray(), StringComparer.Ordinal);
    }

    /// <summary>The map's epoch: the cluster store's revision when it was read (0 for a map built by hand).</summary>
    public long Epoch { get; }

    /// <summary>The nodes, by id.</summary>
    public IReadOnlyList<NodeInfo> Nodes { get; }

    /// <summary>The devices, by node id then index.</summary>
    public IReadOnlyList<DeviceInfo> Devices { get; }

    /// <summary>Builds a map from node records.</summary>
    /// <param name="epoch">The map's epoch.</param>
    /// <param name="nodes">The node records.</param>
    /// <param name="isAlive">Whether a node's lease holds; every node is alive when null.</param>
    /// <returns>The map.</returns>
    public static ClusterMap FromRecords(long epoch, IEnumerable<NodeRecord> nodes, Func<string, bool>? isAlive = null)
    {
        ArgumentNullException.ThrowIfNull(nodes);
        var list = nodes.ToList();
        return new ClusterMap(
            epoch,
            list.Select(n => new NodeInfo(n.Id, n.Address, n.Domain, isAlive?.Invoke(n.Id) ?? true)),
            list.SelectMany(n => n.Devices.Select(d => new DeviceInfo(n.Id, d.Index, d.Capacity, d.Weight))));
    }

    /// <summary>Finds a node.</summary>
    /// <param name="id">The node's id.</param>
    /// <returns>The node, or null.</returns>
    public NodeInfo? FindNode(string id) => _nodes.GetValueOrDefault(id);

    /// <summary>Finds a device.</summary>
    /// <param name="nodeId">The node's id.</param>
    /// <param name="index">The device's index on it.</param>
    /// <returns>The device, or null.</returns>
    public DeviceInfo? FindDevice(string nodeId, int index)
        => _devicesByNode.TryGetValue(nodeId, out var devices) ? Array.Find(devices, d => d.Index == index) : null;

    /// <summary>The devices of one node.</summary>
    /// <param name="nodeId">The node's id.</param>
    /// <returns>Its devices by index (empty for an unknown node).</returns>
    public IReadOnlyList<DeviceInfo> DevicesOf(string nodeId)
        => _devicesByNode.TryGetValue(nodeId, out var devices) ? devices : [];

    /// <summary>The failure domain a device belongs to at <paramref name="level"/>.</summary>
    /// <param name="device">The device (on a node of this map).</param>
    /// <param name="level">The level.</param>
    /// <returns>The domain's name.</returns>
    /// <exception cref="PlacementException">The level is <see cref="FailureDomainLevel.Rack"/> and the node's domain
    /// path names no rack.</exception>
    public string DomainOf(DeviceInfo device, FailureDomainLevel level)
    {
        ArgumentNullException.ThrowIfNull(device);
        var node = FindNode(device.NodeId) ?? throw new ArgumentException($"Device {device.Id} is not in this cluster map.", nameof(device));
        switch (level)
        {
            case FailureDomainLevel.Device:
                return device.Id;
            case FailureDomainLevel.Node:
                return node.Id;
            case FailureDomainLevel.Host:
                return node.Domain.Length == 0 ? node.Id : node.Domain;
            case FailureDomainLevel.Rack:
                int slash = node.Domain.LastIndexOf('/');
                if (slash <= 0)
                {
                    throw new PlacementException($"Node '{node.Id}' has domain '{node.Domain}', which names no rack: give nodes paths like rack1/host2 (--domain), or place at level host.");
                }

                return node.Domain[..slash];
            default:
                throw new ArgumentOutOfRangeException(nameof(level), level, "Unknown failure-domain level.");
        }
    }
}
