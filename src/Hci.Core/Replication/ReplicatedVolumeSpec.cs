namespace Hci.Core.Replication;

/// <summary>What an owner knows of a volume when it attaches it: identity, size, epoch and the allocated extents.</summary>
public sealed class ReplicatedVolumeSpec
{
    /// <summary>The volume's name.</summary>
    public required string Name { get; init; }

    /// <summary>The volume's id (stamped on every replica request).</summary>
    public required ulong VolumeId { get; init; }

    /// <summary>The volume's size in bytes; a multiple of the extent size's block (4 KiB).</summary>
    public required long Size { get; init; }

    /// <summary>The extent size in bytes.</summary>
    /// <remarks>Default <see cref="ReplicaGeometry.DefaultExtentSize"/>.</remarks>
    public long ExtentSize { get; init; } = ReplicaGeometry.DefaultExtentSize;

    /// <summary>The ownership epoch this owner took (by compare-and-swap in the cluster store).</summary>
    public required ulong Epoch { get; init; }

    /// <summary>Writes fail below this many in-sync replicas.</summary>
    public required int MinInSync { get; init; }

    /// <summary>This node's id: its replicas are reached in process and preferred for reads.</summary>
    public required string LocalNodeId { get; init; }

    /// <summary>The extents allocated so far (index to replica set); the others read as zeros.</summary>
    public IReadOnlyDictionary<long, IReadOnlyList<ReplicaTarget>> Extents { get; init; } = new Dictionary<long, IReadOnlyList<ReplicaTarget>>();

    internal void Validate()
    {
        if (string.IsNullOrWhiteSpace(Name))
        {
            throw new ArgumentException("The volume needs a name.");
        }

        if (ExtentSize < ReplicaGeometry.MaxTransfer || !long.IsPow2(ExtentSize) || ExtentSize > (1L << 36))
        {
            throw new ArgumentException($"Volume '{Name}': the extent size must be a power of two from 1 MiB to 64 GiB (was {ExtentSize}).");
        }

        if (Size <= 0 || Size % ReplicaGeometry.BlockSize != 0)
        {
            throw new ArgumentException($"Volume '{Name}': the size must be a positive multiple of 4096 bytes (was {Size}).");
        }

        if (MinInSync < 1)
        {
            throw new ArgumentException($"Volume '{Name}': the minimum in-sync replica count must be at least 1 (was {MinInSync}).");
        }

        foreach (var (index, replicas) in Extents)
        {
            if (index < 0 || index >= ExtentCount)
            {
                throw new ArgumentException($"Volume '{Name}': extent {index} lies outside the volume ({ExtentCount} extents).");
            }

            if (replicas.Count is < 1 or > 16)
            {
                throw new ArgumentException($"Volume '{Name}': extent {index} has {replicas.Count} replicas; 1 to 16 are allowed.");
            }
        }
    }

    internal long ExtentCount => (Size + ExtentSize - 1) / ExtentSize;
}
