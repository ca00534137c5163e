using System.Text.Json.Serialization;

namespace Hci.Core.Cluster;

/// <summary>Whether a replica of an extent holds every acknowledged write, as the cluster store records it.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<ReplicaState>))]
public enum ReplicaState
{
    /// <summary>Holds every acknowledged write: written on every write, may be read (JSON <c>in-sync</c>).</summary>
    [JsonStringEnumMemberName("in-sync")]
    InSync = 0,

    /// <summary>Missed writes: not written, never read, until resynced; the volume's epoch was advanced when it was
    /// marked (JSON <c>out-of-sync</c>).</summary>
    [JsonStringEnumMemberName("out-of-sync")]
    OutOfSync = 1,

    /// <summary>Being copied back in sync: written on every write, never read until marked in sync (JSON
    /// <c>resyncing</c>).</summary>
    [JsonStringEnumMemberName("resyncing")]
    Resyncing = 2,
}
