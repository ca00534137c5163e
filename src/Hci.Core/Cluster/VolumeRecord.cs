using System.Text.Json.Serialization;
using Hci.Core.Replication;

namespace Hci.Core.Cluster;

/// <summary>A volume of the cluster (<c>hci/volumes/&lt;name&gt;</c>).</summary>
public sealed record VolumeRecord
{
    /// <summary>The volume's name (<c>[a-z0-9][a-z0-9._-]{0,62}</c>).</summary>
    public required string Name { get; init; }

    /// <summary>Its id, allocated once from <c>hci/next-volume-id</c> and never reused; extents and replica stores know
    /// the volume by it.</summary>
    public required ulong Id { get; init; }

    /// <summary>Its size in bytes (a multiple of <see cref="ReplicaGeometry.BlockSize"/>).</summary>
    public required long Size { get; init; }

    /// <summary>How many replicas each extent has.</summary>
    public required int Replicas { get; init; }

    /// <summary>The fewest in-sync replicas writes go on with (default <see cref="DefaultMinInSync"/>: 2 of 3, 1 of 2);
    /// below it writes fail.</summary>
    public required int MinInSync { get; init; }

    /// <summary>The extent size in bytes (<see cref="ReplicaGeometry.DefaultExtentSize"/> unless chosen).</summary>
    public long ExtentSize { get; init; } = ReplicaGeometry.DefaultExtentSize;

    /// <summary>The failure-domain level its replicas are spread over.</summary>
    public FailureDomainLevel DomainLevel { get; init; } = FailureDomainLevel.Host;

    /// <summary>The node the volume is attached to, or null when detached.</summary>
    public string? Owner { get; init; }

    /// <summary>The ownership epoch: advanced by every attach and by every transaction that marks a replica out of
    /// sync; replicas refuse requests that carry an older one.</summary>
    public ulong Epoch { get; init; }

    /// <summary>When the volume was created.</summary>
    public DateTimeOffset CreatedAt { get; init; }

    /// <summary>How many extents the volume spans.</summary>
    [JsonIgnore]
    public long ExtentCount => ExtentSize <= 0 ? 0 : (Size / ExtentSize) + (Size % ExtentSize == 0 ? 0 : 1);

    /// <summary>The default minimum of in-sync replicas for <paramref name="replicas"/>: one less, but at least 1.</summary>
    /// <param name="replicas">The replica count.</param>
    /// <returns>The minimum.</returns>
    public static int DefaultMinInSync(int replicas) => Math.Max(1, replicas - 1);
}
