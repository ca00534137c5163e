namespace Hci.Core.Replication;

/// <summary>An allocated extent as its owner sees it.</summary>
/// <param name="Index">The extent's index.</param>
/// <param name="Replicas">Its replicas and their states.</param>
/// <param name="MissedRegions">Per replica, the regions it still has to be sent (0 for in-sync replicas).</param>
public sealed record ExtentStatus(long Index, IReadOnlyList<ReplicaTarget> Replicas, IReadOnlyList<int> MissedRegions);
