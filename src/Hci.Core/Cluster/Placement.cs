using System.Buffers.Binary;
using System.IO.Hashing;
using System.Text;

namespace Hci.Core.Cluster;

/// <summary>
/// Chooses the replica set of an extent over a <see cref="ClusterMap"/>: weighted rendezvous hashing (straw2) in two
/// steps, first the failure domains at the configured level (a domain weighs the sum of its devices' weights), then
/// one device inside each chosen domain. No two replicas share a domain; a device's share of replicas follows its
/// weight; adding or removing a device moves only the extents it wins or held. The result depends only on the map's
/// contents (not on the order nodes and devices are listed) and on (volume id, extent index): every node computes
/// the same set. See docs/cluster.md.
/// </summary>
/// <remarks>
/// Choosing several replicas without replacement favours light domains (a heavy domain cannot hold two replicas
/// of one extent, so the draws it would have won go to the next ones): with domains weighing 1, 1, 2 and 4 over 8
/// domains and 3 replicas, the light ones get 17% more than their share. Placement corrects it like Ceph's
/// <c>choose_args</c> weight sets: the domains' draw weights are adjusted (computed once per map and replica count)
/// so that each domain's probability of holding a replica matches its weight's share; with equal domain weights no
/// adjustment is needed and none is made. The cost: with unequal domain weights, a map change alters every
/// domain's adjusted weight a little, so a few extents move between domains that did not change (measured in the
/// placement tests).
/// A domain heavier than a 1/replicas share of the whole cannot hold its share (it holds at most one replica of every
/// extent): it holds one of every extent, and the rest is shared by weight.
/// Thread-safe; build one per map and reuse it.
/// </remarks>
public sealed class Placement
{
    private const long DomainSeed = 0x48434931; // "HCI1": domain draws
    private const long DeviceSeed = 0x48434932; // "HCI2": device draws, independent of the domain draws

    private readonly Domain[] _domains;
    private readonly double[] _domainWeights;
    private readonly bool _equalDomains;
    private readonly Dictionary<int, double[]> _adjustedWeights = [];
    private readonly Lock _adjustLock = new();

    /// <summary>Prepares placement over <paramref name="map"/>; devices of weight 0 take nothing.</summary>
    /// <param name="map">The cluster map.</param>
    /// <param name="level">The failure-domain level replicas must differ at.</param>
    /// <exception cref="PlacementException">A node's domain path does not name the level (see
    /// <see cref="FailureDomainLevel.Rack"/>).</exception>
    public Placement(ClusterMap map, FailureDomainLevel level = FailureDomainLevel.Host)
    {
        ArgumentNullException.ThrowIfNull(map);
        Map = map;
        Level = level;
        var groups = new SortedDictionary<string, List<DeviceInfo>>(StringComparer.Ordinal);
        foreach (var device in map.Devices)
        {
            if (device.Weight <= 0)
            {
                continue;
            }

            string key = map.DomainOf(device, level);
            if (!groups.TryGetValue(key, out var list))
            {
                groups[key] = list = [];
            }

            list.Add(device);
        }

        _domains = new Domain[groups.Count];
        _domainWeights = new double[groups.Count];
        int i = 0;
        foreach (var (key, devices) in groups)
        {
            var sorted = devices.OrderBy(d => d.Id, StringComparer.Ordinal).ToArray();
            _domains[i] = new Domain(
                key,
                HashId(key),
                sorted,
                sorted.Select(d => HashId(d.Id)).ToArray(),
                sorted.Select(d => d.Weight).ToArray());
            _domainWeights[i] = sorted.Sum(d => d.Weight);
            i++;
        }

        _equalDomains = _domainWeights.All(w => w == _domainWeights[0]);
    }

    /// <summary>The map placed over.</summary>
    public ClusterMap Map { get; }

    /// <summary>The failure-domain level.</summary>
    public FailureDomainLevel Level { get; }

    /// <summary>How many failure domains (with devices of non-zero weight) the map has at <see cref="Level"/>: the
    /// most replicas an extent can have.</summary>
    public int DomainCount => _domains.Length;

    /// <summary>The failure domains at <see cref="Level"/>, by name.</summary>
    public IReadOnlyList<string> DomainNames => _domains.Select(d => d.Key).ToArray();

    /// <summary>Checks that <paramref name="replicas"/> replicas can be placed.</summary>
    /// <param name="replicas">The replica count.</param>
    /// <exception cref="PlacementException">There are fewer failure domains than replicas; the message says how many
    /// there are and what to do.</exception>
    public void EnsurePlaceable(int replicas)
    {
        if (replicas < 1)
        {
            throw new PlacementException($"{replicas} replicas: a volume needs at least 1.");
        }

        if (_domains.Length >= replicas)
        {
            return;
        }

        string level = Level.ToString().ToLowerInvariant();
        if (Map.Devices.Count == 0)
        {
            throw new PlacementException($"The cluster has no devices: placement needs devices to put {replicas} replica(s) on. Start the nodes (a host with --device FILE[:SIZE]) so that they register, then try again.");
        }

        string have = _domains.Length == 0
            ? "no device with a weight above 0"
            : $"{_domains.Length} ({string.Join(", ", _domains.Take(8).Select(d => d.Key))}{(_domains.Length > 8 ? ", ..." : string.Empty)})";
        string hint = Level switch
        {
            FailureDomainLevel.Device => "add devices",
            FailureDomainLevel.Node => "add nodes, or place at level device",
            FailureDomainLevel.Host => "add nodes in other domains (--domain), or place at a lower level (node, device)",
            _ => "add racks, or place at a lower level (host, node, device)",
        };
        throw new PlacementException($"{replicas} replicas need {replicas} failure domains at level {level}, and the cluster has {have}: {hint}, or use fewer replicas.");
    }

    /// <summary>Places the replicas of one extent.</summary>
    /// <param name="volumeId">The volume's id.</param>
    /// <param name="extentIndex">The extent's index.</param>
    /// <param name="replicas">How many replicas.</param>
    /// <returns>The devices, one per replica, in rank order (the first is the extent's preferred replica).</returns>
    /// <exception cref="PlacementException">There are fewer failure domains than replicas.</exception>
    public DeviceInfo[] Place(ulong volumeId, long extentIndex, int replicas)
    {
        EnsurePlaceable(replicas);
        var weights = AdjustedWeights(replicas);
        Span<int> chosen = stackalloc int[replicas];
        Span<double> best = stackalloc double[replicas];
        int count = 0;
        for (int i = 0; i < _domains.Length; i++)
        {
            double draw = Draw(volumeId, extentIndex, _domains[i].KeyHash, DomainSeed, weights[i]);

            // Keep the top `replicas` draws, best first; a tie keeps the earlier domain (by name): deterministic.
            if (count == replicas && draw <= best[count - 1])
            {
                continue;
            }

            int at = count == replicas ? count - 1 : count++;
            while (at > 0 && draw > best[at - 1])
            {
                best[at] = best[at - 1];
                chosen[at] = chosen[at - 1];
                at--;
            }

            best[at] = draw;
            chosen[at] = i;
        }

        var result = new DeviceInfo[replicas];
        for (int r = 0; r < replicas; r++)
        {
            var domain = _domains[chosen[r]];
            int pick = 0;
            double top = double.NegativeInfinity;
            for (int d = 0; d < domain.Devices.Length; d++)
            {
                double draw = Draw(volumeId, extentIndex, domain.DeviceHashes[d], DeviceSeed, domain.DeviceWeights[d]);
                if (draw > top)
                {
                    top = draw;
                    pick = d;
                }
            }

            result[r] = domain.Devices[pick];
        }

        return result;
    }

    /// <summary>The straw2 draw: ln(u) / weight with u uniform in (0, 1) from a fixed 64-bit hash; the largest wins.</summary>
    private static double Draw(ulong volumeId, long extentIndex, ulong candidate, long seed, double weight)
    {
        Span<byte> input = stackalloc byte[24];
        BinaryPrimitives.WriteUInt64LittleEndian(input, volumeId);
        BinaryPrimitives.WriteInt64LittleEndian(input[8..], extentIndex);
        BinaryPrimitives.WriteUInt64LittleEndian(input[16..], candidate);
        ulong hash = XxHash3.HashToUInt64(input, seed);
        double u = ((hash >> 11) + 0.5) * (1.0 / (1UL << 53));
        return Math.Log(u) / weight;
    }

    private static ulong HashId(string id) => XxHash3.HashToUInt64(Encoding.UTF8.GetBytes(id));

    private double[] AdjustedWeights(int replicas)
    {
        if (replicas == 1 || _equalDomains || replicas >= _domains.Length)
        {
            return _domainWeights; // one pick, equal domains, or every domain chosen: no bias to correct
        }

        lock (_adjustLock)
        {
            if (!_adjustedWeights.TryGetValue(replicas, out var adjusted))
            {
                adjusted = PlacementWeights.Adjust(_domainWeights, replicas);
                _adjustedWeights[replicas] = adjusted;
            }

            return adjusted;
        }
    }

    private sealed record Domain(string Key, ulong KeyHash, DeviceInfo[] Devices, ulong[] DeviceHashes, double[] DeviceWeights);
}
