namespace Hci.Core.Cluster;

/// <summary>A change seen by <see cref="IClusterStore.WatchAsync"/>.</summary>
/// <param name="Entry">The key with its new value and revision; for a delete, the key with an empty value and the
/// revision of the delete.</param>
/// <param name="Deleted">True when the key was deleted (or its lease lapsed).</param>
public readonly record struct StoreEvent(StoreEntry Entry, bool Deleted);
