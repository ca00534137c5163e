namespace Hci.Core.Cluster;

/// <summary>A compare of a transaction: <see cref="Key"/>'s modification revision must be <see cref="ModRevision"/>.</summary>
/// <param name="Key">The key.</param>
/// <param name="ModRevision">The revision the key must have; 0 means the key must not exist.</param>
public readonly record struct StoreCondition(string Key, long ModRevision);
