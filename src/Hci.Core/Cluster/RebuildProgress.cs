using System.Text.Json.Serialization;

namespace Hci.Core.Cluster;

/// <summary>A volume's rebuild (or drain, or rebalance) progress as its owner reports it (<c>hci/rebuild/&lt;volume&gt;</c>).</summary>
public sealed record RebuildProgress
{
    /// <summary>The volume.</summary>
    public required string Volume { get; init; }

    /// <summary>The owner doing the work.</summary>
    public required string Owner { get; init; }

    /// <summary>Why replicas move: <c>rebuild</c> (lost nodes), <c>drain</c> (draining nodes) or <c>rebalance</c>
    /// (placement changed, e.g. a node joined).</summary>
    public string Reason { get; init; } = "rebuild";

    /// <summary>The nodes whose replicas are being replaced (lost or draining; none for a rebalance).</summary>
    public IReadOnlyList<string> LostNodes { get; init; } = [];

    /// <summary>Extent replicas to move in this rebuild.</summary>
    public long ExtentsTotal { get; init; }

    /// <summary>Extent replicas moved so far.</summary>
    public long ExtentsDone { get; init; }

    /// <summary>Extent replicas whose move failed (they are tried again later).</summary>
    public long ExtentsFailed { get; init; }

    /// <summary>Bytes to copy in all.</summary>
    public long BytesTotal { get; init; }

    /// <summary>Bytes copied so far.</summary>
    public long BytesDone { get; init; }

    /// <summary>The copy rate since the rebuild started, bytes per second.</summary>
    public double BytesPerSecond { get; init; }

    /// <summary>When the rebuild started.</summary>
    public DateTimeOffset StartedAt { get; init; }

    /// <summary>When this record was written.</summary>
    public DateTimeOffset UpdatedAt { get; init; }

    /// <summary>True once every replica is moved (the record stays as the last rebuild's summary).</summary>
    public bool Finished { get; init; }
}

/// <summary>The JSON of the rebuild records, generated at build time (no reflection).</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(RebuildProgress))]
[JsonSerializable(typeof(NodeDownRecord))]
internal sealed partial class RebuildJsonContext : JsonSerializerContext
{
}
