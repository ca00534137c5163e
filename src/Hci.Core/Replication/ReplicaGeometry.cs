namespace Hci.Core.Replication;

/// <summary>The fixed units of the replicated layer.</summary>
public static class ReplicaGeometry
{
    /// <summary>The block a checksum covers, and the logical block size of a replicated volume: 4 KiB.</summary>
    public const int BlockSize = 4096;

    /// <summary>The default extent size: 4 MiB (see docs/cluster.md for the measurement behind it).</summary>
    public const long DefaultExtentSize = 4L << 20;

    /// <summary>An extent is tracked in 64 regions (one bit each of a 64-bit mask) for the activity log, the
    /// missed-write bitmaps and resync.</summary>
    public const int RegionsPerExtent = 64;

    /// <summary>The most bytes one replica request moves: 1 MiB.</summary>
    public const int MaxTransfer = 1 << 20;
}
