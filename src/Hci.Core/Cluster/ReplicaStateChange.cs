namespace Hci.Core.Cluster;

/// <summary>The outcome of <see cref="ClusterCatalog.MarkReplicaStateAsync"/>: the volume (with its epoch, advanced when
/// a replica went out of sync) and the extent, as committed.</summary>
/// <param name="Volume">The volume record.</param>
/// <param name="Extent">The extent record.</param>
public sealed record ReplicaStateChange(VolumeRecord Volume, ExtentRecord Extent);
