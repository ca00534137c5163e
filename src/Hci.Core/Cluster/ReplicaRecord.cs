using System.Text.Json.Serialization;

namespace Hci.Core.Cluster;

/// <summary>One replica of an extent: where it lives and whether it is current.</summary>
/// <param name="NodeId">The node (JSON <c>node</c>).</param>
/// <param name="Device">The device's index on that node.</param>
/// <param name="State">Its state.</param>
public sealed record ReplicaRecord(
    [property: JsonPropertyName("node")] string NodeId,
    int Device,
    ReplicaState State);
