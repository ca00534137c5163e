namespace Hci.Core.Cluster;

/// <summary>Typed access to the cluster store.</summary>
public sealed class ClusterCatalog
{
}
