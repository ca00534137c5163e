namespace Hci.Core.Cluster;

/// <summary>A node of the cluster map.</summary>
/// <param name="Id">The node's id (<c>[a-z0-9][a-z0-9._-]{0,62}</c>).</param>
/// <param name="Address">Where its replica server listens, <c>host:port</c>.</param>
/// <param name="Domain">Its failure-domain path, outermost first (<c>rack1/host2</c>); empty when not given.</param>
/// <param name="Alive">True while the node's membership lease holds.</param>
public sealed record NodeInfo(string Id, string Address, string Domain, bool Alive = true);
