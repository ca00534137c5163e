namespace Hci.Core.Storage;

/// <summary>What a <see cref="ReplicaStore"/> has counted since it was opened; safe to read from any thread.</summary>
public sealed class ReplicaStoreStats
{
    private long _checksumMismatches;
    private long _tornBlocksReconciled;
    private long _reads;
    private long _writes;
    private long _staleEpochRefusals;
    private long _invalidRequests;

    /// <summary>Blocks a read found whose data did not match their stored checksum (not served: corruption).</summary>
    public long ChecksumMismatches => Volatile.Read(ref _checksumMismatches);

    /// <summary>Blocks inside the activity log whose data recovery found newer than their stored checksum, and whose
    /// checksum it recomputed: torn by an unacknowledged write, or overwritten while their checksum page was still
    /// waiting for write-back. Not corruption.</summary>
    public long TornBlocksReconciled => Volatile.Read(ref _tornBlocksReconciled);

    /// <summary>Read requests served.</summary>
    public long Reads => Volatile.Read(ref _reads);

    /// <summary>Write requests served.</summary>
    public long Writes => Volatile.Read(ref _writes);

    /// <summary>Requests refused because their epoch was older than the volume's newest (fenced owners).</summary>
    public long StaleEpochRefusals => Volatile.Read(ref _staleEpochRefusals);

    /// <summary>Requests refused as malformed.</summary>
    public long InvalidRequests => Volatile.Read(ref _invalidRequests);

    internal void AddChecksumMismatches(long n) => Interlocked.Add(ref _checksumMismatches, n);

    internal void AddTornBlocks(long n) => Interlocked.Add(ref _tornBlocksReconciled, n);

    internal void CountRead() => Interlocked.Increment(ref _reads);

    internal void CountWrite() => Interlocked.Increment(ref _writes);

    internal void CountStaleEpoch() => Interlocked.Increment(ref _staleEpochRefusals);

    internal void CountInvalid() => Interlocked.Increment(ref _invalidRequests);
}
