using Hci.Core.Replication;

namespace Hci.Core.Cluster;

/// <summary>
/// Chooses where a lost or moving replica goes: the device placement prefers over the live nodes, in a failure
/// domain none of the kept replicas is in.
/// </summary>
public sealed class ReplacementPlanner
{
    private readonly ClusterMap _full;

    internal ReplacementPlanner(ClusterMap full, Placement live)
    {
        _full = full;
        Live = live;
    }

    /// <summary>The placement over the live nodes.</summary>
    public Placement Live { get; }

    /// <summary>Chooses the device for one new replica of an extent.</summary>
    /// <param name="volumeId">The volume's id.</param>
    /// <param name="extentIndex">The extent's index.</param>
    /// <param name="replicas">The volume's replica count.</param>
    /// <param name="keep">The replicas that stay (their domains are taken).</param>
    /// <returns>The device, or null when no live failure domain is free.</returns>
    public DeviceInfo? Choose(ulong volumeId, long extentIndex, int replicas, IReadOnlyList<ReplicaTarget> keep)
    {
        ArgumentNullException.ThrowIfNull(keep);
        var taken = new HashSet<string>(StringComparer.Ordinal);
        foreach (var k in keep)
        {
            var device = _full.FindDevice(k.NodeId, k.Device);
            if (device != null)
            {
                taken.Add(_full.DomainOf(device, Live.Level));
            }
        }

        int count = Math.Min(Math.Max(replicas, 1), Live.DomainCount);
        if (count == 0)
        {
            return null;
        }

        // Placement's choice over the live nodes, in rank order: the first that is in a free domain. Straw2 keeps the
        // surviving replicas' draws, so this is the replica placement would have chosen had the lost one never been.
        foreach (var device in Live.Place(volumeId, extentIndex, count))
        {
            if (!taken.Contains(_full.DomainOf(device, Live.Level)))
            {
                return device;
            }
        }

        // Every preferred domain holds a kept replica: try the rest of the live domains in placement's order.
        foreach (var device in Live.Place(volumeId, extentIndex, Live.DomainCount))
        {
            if (!taken.Contains(_full.DomainOf(device, Live.Level)))
            {
                return device;
            }
        }

        return null;
    }

    /// <summary>
    /// The moves that bring an extent's replicas where placement wants them: each replica on a device placement does
    /// not choose goes to a chosen device it is not on yet, in a failure domain no other replica is in, and on a node
    /// that is alive. Replicas already where placement wants them stay, so a map change moves no more than placement
    /// requires.
    /// </summary>
    /// <param name="volumeId">The volume's id.</param>
    /// <param name="extentIndex">The extent's index.</param>
    /// <param name="replicas">The volume's replica count.</param>
    /// <param name="current">The extent's replicas now.</param>
    /// <returns>The moves, possibly none.</returns>
    public IReadOnlyList<(ReplicaTarget From, DeviceInfo To)> Rebalance(ulong volumeId, long extentIndex, int replicas, IReadOnlyList<ReplicaTarget> current)
    {
        ArgumentNullException.ThrowIfNull(current);
        int count = Math.Min(Math.Max(replicas, 1), Live.DomainCount);
        if (count < replicas)
        {
            return [];
        }

        var desired = Live.Place(volumeId, extentIndex, count);
        var now = current.ToList();
        var moves = new List<(ReplicaTarget, DeviceInfo)>();
        foreach (var replica in current)
        {
            if (desired.Any(d => d.NodeId == replica.NodeId && d.Index == replica.Device))
            {
                continue;
            }

            var taken = new HashSet<string>(StringComparer.Ordinal);
            foreach (var other in now)
            {
                if ((other.NodeId != replica.NodeId || other.Device != replica.Device) && _full.FindDevice(other.NodeId, other.Device) is { } d)
                {
                    taken.Add(_full.DomainOf(d, Live.Level));
                }
            }

            var to = desired.FirstOrDefault(d => !now.Any(n => n.NodeId == d.NodeId && n.Device == d.Index)
                && !taken.Contains(_full.DomainOf(d, Live.Level))
                && _full.FindNode(d.NodeId) is { Alive: true });
            if (to == null)
            {
                continue;
            }

            moves.Add((replica, to));
            now[now.FindIndex(n => n.NodeId == replica.NodeId && n.Device == replica.Device)] = new ReplicaTarget(to.NodeId, to.Index, ReplicaState.OutOfSync);
        }

        return moves;
    }
}
