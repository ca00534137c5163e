namespace Hci.Core.Cluster;

/// <summary>A node as it registers itself in the cluster store (<c>hci/nodes/&lt;id&gt;</c>).</summary>
public sealed record NodeRecord
{
    /// <summary>The node's id (<c>[a-z0-9][a-z0-9._-]{0,62}</c>).</summary>
    public required string Id { get; init; }

    /// <summary>Where its replica server listens, <c>host:port</c>.</summary>
    public required string Address { get; init; }

    /// <summary>Its failure-domain path, outermost first (<c>rack1/host2</c>); empty when not given.</summary>
    public string Domain { get; init; } = string.Empty;

    /// <summary>Its devices.</summary>
    public IReadOnlyList<DeviceRecord> Devices { get; init; } = [];
}
