namespace Hci.Core.Cluster;

/// <summary>One key of the cluster store with its value and the revision that last changed it.</summary>
/// <param name="Key">The key.</param>
/// <param name="Value">The value (UTF-8 JSON for everything <c>ClusterCatalog</c> writes).</param>
/// <param name="ModRevision">The store revision of the key's last change; the handle for compare-and-swap.</param>
/// <param name="Lease">The lease the key is attached to, or 0.</param>
public readonly record struct StoreEntry(string Key, ReadOnlyMemory<byte> Value, long ModRevision, long Lease = 0);
