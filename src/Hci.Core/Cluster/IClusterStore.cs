namespace Hci.Core.Cluster;

/// <summary>
/// The cluster's shared metadata as a small transactional key-value store with revisions, leases and watches: what
/// etcd v3 offers, and what <c>Hci.Cluster</c> implements on it. A single node whose replicas sit on its own devices
/// uses <c>LocalClusterStore</c> (one file) instead. Typed access (nodes, devices, volumes, extents, epochs)
/// is <c>ClusterCatalog</c>'s; this interface only moves bytes.
/// </summary>
/// <remarks>
/// Control plane only: nothing here is called per I/O. Every call may throw <see cref="ClusterStoreException"/>
/// when the store cannot be reached or refuses the request; a failed compare in <see cref="TryCommitAsync"/> is a
/// result (false), not an exception.
/// </remarks>
public interface IClusterStore : IAsyncDisposable
{
    /// <summary>Reads one key.</summary>
    /// <param name="key">The key.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The entry, or null when the key does not exist.</returns>
    ValueTask<StoreEntry?> GetAsync(string key, CancellationToken cancellationToken = default);

    /// <summary>Reads every key that starts with <paramref name="prefix"/>, in key order, at one revision.</summary>
    /// <param name="prefix">The prefix.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The entries and the store's revision they were read at.</returns>
    ValueTask<StoreRange> ListAsync(string prefix, CancellationToken cancellationToken = default);

    /// <summary>
    /// Applies <paramref name="writes"/> atomically when every condition holds, and nothing otherwise (etcd's
    /// transaction with <c>mod_revision</c> compares).
    /// </summary>
    /// <param name="conditions">What must hold: each key's modification revision (0: the key must not exist).</param>
    /// <param name="writes">The puts and deletes.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The new revision when applied; null when a condition failed.</returns>
    ValueTask<long?> TryCommitAsync(IReadOnlyList<StoreCondition> conditions, IReadOnlyList<StoreWrite> writes, CancellationToken cancellationToken = default);

    /// <summary>
    /// Grants a lease of <paramref name="ttl"/> and keeps it alive until the lease is disposed or the store can no
    /// longer reach the cluster; keys written with the lease disappear when it lapses (a node's membership).
    /// </summary>
    /// <param name="ttl">The time to live; the store refreshes the lease well within it.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The lease.</returns>
    ValueTask<IStoreLease> GrantLeaseAsync(TimeSpan ttl, CancellationToken cancellationToken = default);

    /// <summary>
    /// Streams the changes to keys under <paramref name="prefix"/> made after <paramref name="afterRevision"/>,
    /// in revision order, until cancelled. A watcher that falls too far behind gets a
    /// <see cref="ClusterStoreException"/> and should re-read with <see cref="ListAsync"/>.
    /// </summary>
    /// <param name="prefix">The prefix.</param>
    /// <param name="afterRevision">The revision the caller has already seen (from <see cref="StoreRange.Revision"/>).</param>
    /// <param name="cancellationToken">Ends the watch.</param>
    /// <returns>The changes.</returns>
    IAsyncEnumerable<StoreEvent> WatchAsync(string prefix, long afterRevision, CancellationToken cancellationToken);
}
