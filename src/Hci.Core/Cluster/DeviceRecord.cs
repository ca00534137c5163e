namespace Hci.Core.Cluster;

/// <summary>A device as its node registers it in <see cref="NodeRecord.Devices"/>.</summary>
public sealed record DeviceRecord
{
    /// <summary>Its index on the node (0, 1, ...).</summary>
    public required int Index { get; init; }

    /// <summary>Its size in bytes.</summary>
    public required long Capacity { get; init; }

    /// <summary>Its placement weight; by convention its capacity in TiB (see <see cref="WeightOf"/>). 0 takes no new
    /// extents.</summary>
    public required double Weight { get; init; }

    /// <summary>The conventional weight of a device of <paramref name="capacity"/> bytes: its capacity in TiB.</summary>
    /// <param name="capacity">The capacity in bytes.</param>
    /// <returns>The weight.</returns>
    public static double WeightOf(long capacity) => capacity / (double)(1L << 40);
}
