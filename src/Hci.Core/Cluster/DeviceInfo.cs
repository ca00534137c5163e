namespace Hci.Core.Cluster;

/// <summary>A device of the cluster map: one replica store on one node.</summary>
/// <param name="NodeId">The node it belongs to.</param>
/// <param name="Index">Its index on that node (0, 1, ...).</param>
/// <param name="Capacity">Its size in bytes.</param>
/// <param name="Weight">Its placement weight (by convention its capacity in TiB); 0 takes no new extents.</param>
public sealed record DeviceInfo(string NodeId, int Index, long Capacity, double Weight)
{
    /// <summary>The device's id in the cluster, <c>node/index</c>.</summary>
    public string Id => $"{NodeId}/{Index}";
}
