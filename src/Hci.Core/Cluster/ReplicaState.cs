using System.Text.Json.Serialization;

namespace Hci.Core.Cluster;

/// <summary>The state of one replica of an extent, as the cluster store records it.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<ReplicaState>))]
public enum ReplicaState
{
    /// <summary>The replica holds every acknowledged write of the extent: it takes writes and may be read
    /// (JSON <c>in-sync</c>).</summary>
    [JsonStringEnumMemberName("in-sync")]
    InSync,

    /// <summary>The replica missed writes: it is never read, and the volume's epoch was advanced when it was marked
    /// (JSON <c>out-of-sync</c>).</summary>
    [JsonStringEnumMemberName("out-of-sync")]
    OutOfSync,

    /// <summary>The replica is being brought up to date from an in-sync one; it is not read until it is marked in sync
    /// (JSON <c>resyncing</c>).</summary>
    [JsonStringEnumMemberName("resyncing")]
    Resyncing,
}
