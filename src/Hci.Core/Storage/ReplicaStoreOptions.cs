using Hci.Core.Replication;

namespace Hci.Core.Storage;

/// <summary>How <see cref="ReplicaStore.FormatAsync"/> lays a store out on a device.</summary>
public sealed class ReplicaStoreOptions
{
    /// <summary>The smallest extent: 64 regions of one 4 KiB block each.</summary>
    public const long MinExtentSize = ReplicaGeometry.BlockSize * (long)ReplicaGeometry.RegionsPerExtent;

    /// <summary>The largest extent: 1 GiB.</summary>
    public const long MaxExtentSize = 1L << 30;

    /// <summary>The size of every data slot, and of the extents the store holds: a power of two from
    /// <see cref="MinExtentSize"/> to <see cref="MaxExtentSize"/>. It must match the volumes' extent size.
    /// <remarks>Default: <see cref="ReplicaGeometry.DefaultExtentSize"/> (4 MiB).</remarks></summary>
    public long ExtentSize { get; set; } = ReplicaGeometry.DefaultExtentSize;

    /// <summary>How many volumes the store can hold extents of (one volume-table entry, with its epoch, each): 1 to
    /// 1,048,576. <remarks>Default: 4096 (128 KiB of volume table).</remarks></summary>
    public int MaxVolumes { get; set; } = 4096;

    /// <summary>The store's identity, written in its superblock. <remarks>Default: a new random id.</remarks></summary>
    public Guid? StoreId { get; set; }

    /// <summary>Checks the options and says what to fix.</summary>
    /// <exception cref="ArgumentException">An option is out of range; the message says which and what is allowed.</exception>
    public void Validate()
    {
        if (ExtentSize < MinExtentSize || ExtentSize > MaxExtentSize || !long.IsPow2(ExtentSize))
        {
            throw new ArgumentException($"ExtentSize must be a power of two from {MinExtentSize} (256 KiB) to {MaxExtentSize} (1 GiB) bytes (was {ExtentSize}); the default, 4 MiB, suits most volumes.");
        }

        if (MaxVolumes < 1 || MaxVolumes > 1 << 20)
        {
            throw new ArgumentException($"MaxVolumes must be from 1 to 1048576 (was {MaxVolumes}).");
        }

        if (StoreId == Guid.Empty)
        {
            throw new ArgumentException("StoreId must not be the empty Guid; leave it null for a random one.");
        }
    }
}
