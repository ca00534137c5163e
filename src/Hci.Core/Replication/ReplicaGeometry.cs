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

    /// <summary>The mask of the regions (of <paramref name="regionSize"/> bytes, 64 to an extent) that the range
    /// <paramref name="offset"/> + <paramref name="length"/> within an extent touches; the range is not empty.</summary>
    internal static ulong RegionMask(long offset, long length, long regionSize)
    {
        int first = (int)(offset / regionSize);
        int last = (int)((offset + length - 1) / regionSize);
        return (last == RegionsPerExtent - 1 ? ulong.MaxValue : ((1UL << (last + 1)) - 1)) & ~((1UL << first) - 1);
    }
}
