using System.Text.Json.Serialization;

namespace Hci.Core.Cluster;

/// <summary>An allocated extent of a volume and its replicas (<c>hci/extents/&lt;volume id&gt;/&lt;index&gt;</c>).</summary>
/// <param name="Index">The extent's index in its volume.</param>
/// <param name="Replicas">Its replicas, in placement order.</param>
public sealed record ExtentRecord(long Index, IReadOnlyList<ReplicaRecord> Replicas)
{
    /// <summary>True when every replica is in sync.</summary>
    [JsonIgnore]
    public bool Healthy => Replicas.All(r => r.State == ReplicaState.InSync);

    /// <summary>How many replicas are in sync.</summary>
    [JsonIgnore]
    public int InSyncCount => Replicas.Count(r => r.State == ReplicaState.InSync);
}
