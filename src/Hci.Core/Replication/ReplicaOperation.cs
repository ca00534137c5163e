namespace Hci.Core.Replication;

/// <summary>What a <see cref="ReplicaRequest"/> asks of a replica store. The numeric values are the wire's.</summary>
public enum ReplicaOperation : byte
{
    /// <summary>Reads <see cref="ReplicaRequest.Length"/> bytes of an extent into the segments, and the blocks'
    /// checksums into <see cref="ReplicaRequest.Checksums"/> when given. An extent the store never allocated reads as
    /// zeros, with no I/O. A block whose stored checksum does not match is not served:
    /// <see cref="ReplicaStatus.ChecksumMismatch"/>.</summary>
    Read = 1,

    /// <summary>Writes the segments to an extent, allocating it on its first write. The region is recorded in the
    /// store's activity log before the data goes to the device.</summary>
    Write = 2,

    /// <summary>Makes every completed write durable (the device's flush).</summary>
    Flush = 3,

    /// <summary>Fills <see cref="ReplicaRequest.Checksums"/> with the stored checksums of the range, without reading
    /// the data (comparison of replicas, tests, scrub).</summary>
    ReadChecksums = 4,

    /// <summary>Raises the volume's epoch on the store to <see cref="ReplicaRequest.Epoch"/> (durably) and does
    /// nothing else: a new owner fences the old one on every replica before it serves.</summary>
    Fence = 5,

    /// <summary>Lists the extents of the volume the store holds: <see cref="ReplicaRequest.Result"/> is their count,
    /// and the segments receive their indices as little-endian 64-bit integers (as many as fit).</summary>
    ListExtents = 6,

    /// <summary>Lists the volume's regions in the store's activity log (written since last marked clean): the result
    /// is the count of dirty extents, and the segments receive (extent index, region mask) pairs of little-endian
    /// 64-bit integers.</summary>
    GetDirtyRegions = 7,

    /// <summary>Clears the regions in <see cref="ReplicaRequest.Argument"/> (a mask over the extent's
    /// <see cref="ReplicaGeometry.RegionsPerExtent"/> regions) of the extent from the activity log: the owner says
    /// every in-sync replica has every write it sent there.</summary>
    MarkClean = 8,

    /// <summary>Frees the extent on the store (its replica moved, or the volume shrank or went).</summary>
    DropExtent = 9,

    /// <summary>Frees every extent of the volume and forgets it.</summary>
    DropVolume = 10,
}
