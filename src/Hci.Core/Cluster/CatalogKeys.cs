using System.Globalization;

namespace Hci.Core.Cluster;

/// <summary>The cluster store's keys (docs/cluster.md, "Cluster store keys").</summary>
internal static class CatalogKeys
{
    public const string Nodes = "hci/nodes/";
    public const string Alive = "hci/alive/";
    public const string Volumes = "hci/volumes/";
    public const string Extents = "hci/extents/";
    public const string NextVolumeId = "hci/next-volume-id";

    public static string Node(string id) => Nodes + id;

    public static string AliveKey(string id) => Alive + id;

    public static string Volume(string name) => Volumes + name;

    public static string ExtentsOf(ulong volumeId) => string.Create(CultureInfo.InvariantCulture, $"{Extents}{volumeId}/");

    /// <summary>An extent's key: its index in 12 digits, so that key order is index order.</summary>
    public static string Extent(ulong volumeId, long index) => string.Create(CultureInfo.InvariantCulture, $"{Extents}{volumeId}/{index:D12}");
}
