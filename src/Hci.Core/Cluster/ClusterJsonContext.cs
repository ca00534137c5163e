using System.Text.Json.Serialization;

namespace Hci.Core.Cluster;

/// <summary>The JSON of the cluster store's records, generated at build time (no reflection).</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(NodeRecord))]
[JsonSerializable(typeof(VolumeRecord))]
[JsonSerializable(typeof(ExtentRecord))]
internal sealed partial class ClusterJsonContext : JsonSerializerContext
{
}
