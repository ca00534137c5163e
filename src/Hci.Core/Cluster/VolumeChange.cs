namespace Hci.Core.Cluster;

/// <summary>A change of a volume record seen by <see cref="ClusterCatalog.WatchVolumesAsync"/>.</summary>
/// <param name="Name">The volume's name.</param>
/// <param name="Volume">The new record, or null when the volume was deleted.</param>
/// <param name="Revision">The store revision of the change.</param>
public sealed record VolumeChange(string Name, VolumeRecord? Volume, long Revision);
