using System.Text.Json.Serialization;

namespace Hci.Core.Cluster;

/// <summary>
/// The level at which replicas of one extent must differ: no two replicas of an extent share a failure domain at this
/// level. A node's domain path names where it runs, outermost first (<c>rack1/host2</c>).
/// </summary>
[JsonConverter(typeof(JsonStringEnumConverter<FailureDomainLevel>))]
public enum FailureDomainLevel
{
    /// <summary>Every device is its own domain: replicas only need distinct devices (a single node whose replicas sit
    /// on its own devices; JSON <c>device</c>).</summary>
    [JsonStringEnumMemberName("device")]
    Device,

    /// <summary>Every node is its own domain (JSON <c>node</c>).</summary>
    [JsonStringEnumMemberName("node")]
    Node,

    /// <summary>The node's whole domain path is its domain (<c>rack1/host2</c>; the node id when the path is empty):
    /// the default (JSON <c>host</c>).</summary>
    [JsonStringEnumMemberName("host")]
    Host,

    /// <summary>The domain path without its last part (<c>rack1</c> for <c>rack1/host2</c>); a node whose path has one
    /// part names no rack, and placement refuses it (JSON <c>rack</c>).</summary>
    [JsonStringEnumMemberName("rack")]
    Rack,
}
