using Hci.Core.Cluster;

namespace Hci.Core.Replication;

/// <summary>One replica of an extent: a device of a node, and its state.</summary>
/// <param name="NodeId">The node.</param>
/// <param name="Device">The device's index on the node.</param>
/// <param name="State">Whether it holds every acknowledged write.</param>
public readonly record struct ReplicaTarget(string NodeId, int Device, ReplicaState State);
