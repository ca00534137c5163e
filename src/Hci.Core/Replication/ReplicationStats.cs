namespace Hci.Core.Replication;

/// <summary>What a <see cref="ReplicatedVolume"/> has repaired, resynced and reconciled since it was attached.</summary>
/// <param name="ReadRepairs">Ranges rewritten on a replica after they failed their checksum.</param>
/// <param name="ChecksumMismatches">Replica reads refused because a block failed its checksum.</param>
/// <param name="ResyncedBytes">Bytes copied to replicas coming back in sync.</param>
/// <param name="ResyncedRegions">Regions copied to replicas coming back in sync.</param>
/// <param name="ReconciledBytes">Bytes copied at attach to settle a previous owner's in-flight writes.</param>
/// <param name="ReconciledRegions">Regions copied at attach.</param>
/// <param name="OutOfSyncMarks">Extent replicas marked out of sync after a failed write or flush.</param>
public readonly record struct ReplicationStats(
    long ReadRepairs,
    long ChecksumMismatches,
    long ResyncedBytes,
    long ResyncedRegions,
    long ReconciledBytes,
    long ReconciledRegions,
    long OutOfSyncMarks);
