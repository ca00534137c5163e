namespace Hci.Core.Cluster;

/// <summary>The entries under a prefix, read at one revision of the store.</summary>
/// <param name="Entries">The entries in key order.</param>
/// <param name="Revision">The store's revision at the read: watch from here to miss nothing.</param>
public readonly record struct StoreRange(IReadOnlyList<StoreEntry> Entries, long Revision);
