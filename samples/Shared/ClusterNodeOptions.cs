namespace Hci.Samples.Shared;

/// <summary>How a sample host joins a cluster (<c>--etcd</c>) or runs the embedded single-node store
/// (<c>--data-dir</c>): the flags every host shares.</summary>
internal sealed class ClusterNodeOptions
{
    /// <summary>The setting names of the cluster options.</summary>
    public static readonly string[] Keys = ["Etcd", "DataDir", "Node", "Listen", "Advertise", "Domain", "Device", "ClusterKeyFile", "RebuildAfter", "RebuildParallel", "RecoveryRate", "RecoveryLatencyFactor"];

    /// <summary>Adds the cluster options (<c>--etcd</c>, <c>--data-dir</c>, <c>--node</c>, ...) to a host's command line.</summary>
    public static void AddOptions(SampleCommandLine cli)
    {
        cli.Text("--etcd", "Etcd", "URL[,URL...]", "Cluster node: the cluster store (etcd v3), e.g. http://127.0.0.1:2379. Every volume attached to this node is served");
        cli.Text("--data-dir", "DataDir", "DIR", "Cluster node, instead of --etcd: the embedded single-node store in DIR (replicas on this node's devices)");
        cli.Text("--node", "Node", "ID", "Cluster node: this node's id (letters, digits, '-', '_', '.')");
        cli.Text("--listen", "Listen", "HOST:PORT", "Cluster node: where peers reach this node's replicas (with --etcd) [default: 127.0.0.1:7420]");
        cli.Text("--advertise", "Advertise", "HOST:PORT", "Cluster node: the address peers are told to reach this node's replicas at, where it differs from --listen (a proxy in between, NAT) [default: the address --listen bound]");
        cli.Text("--domain", "Domain", "PATH", "Cluster node: this node's failure domain, e.g. rack1/host2 [default: host/ID]");
        cli.Repeatable("--device", "Device", "FILE[:SIZE]", "Cluster node: a replica store on FILE, created at SIZE (k, m, g, t) if missing (repeatable)");
        cli.Text("--cluster-key-file", "ClusterKeyFile", "FILE", "Cluster node with --etcd: the cluster's key (random bytes, mode 0600). Create one with hci cluster key --out FILE");
        cli.Text("--rebuild-after", "RebuildAfter", "DURATION", "Cluster node: a node down this long (e.g. 90s, 10m, 1h) loses its replicas: the owners rebuild them on live nodes [default: 10m]", DurationText.Check);
        cli.Text("--recovery-rate", "RecoveryRate", "RATE|off", "Cluster node: the fastest each attached volume copies replicas back into sync (resync, rebuild, rebalance), bytes per second, e.g. 256M; within it copies slow down while the volume's clients get more than --recovery-latency-factor times slower than before; off: as fast as they go, unpaced [default: 256M]", RecoveryRateCheck);
        cli.Text("--recovery-latency-factor", "RecoveryLatencyFactor", "X|fixed", "Cluster node: how much slower (mean latency) a volume's clients may get during its recovery before the copies slow down, more than 1 and at most 100; fixed: copies run at --recovery-rate whatever the clients see [default: 1.5]", LatencyFactorCheck);
        cli.Text("--rebuild-parallel", "RebuildParallel", "N", "Cluster node: extents an owner copies at once per volume in a rebuild (1 to 64) [default: 4]", SampleCommandLine.WholeNumber(1, 64));
    }

    /// <summary>The cluster settings from a host's configuration.</summary>
    public static ClusterNodeOptions FromConfiguration(Microsoft.Extensions.Configuration.IConfiguration configuration)
    {
        var o = new ClusterNodeOptions
        {
            Etcd = configuration["Etcd"],
            DataDir = configuration["DataDir"],
            NodeId = configuration["Node"] ?? "",
            Listen = configuration["Listen"] ?? "127.0.0.1:7420",
            Advertise = configuration["Advertise"],
            Domain = configuration["Domain"],
            ClusterKeyFile = configuration["ClusterKeyFile"],
            RebuildAfter = SampleCommandLine.Checked(configuration, "RebuildAfter", "--rebuild-after", DurationText.Check) is { } after ? DurationText.Parse(after) : TimeSpan.FromMinutes(10),
            RebuildParallel = SampleCommandLine.Int(configuration, "RebuildParallel", "--rebuild-parallel", 1, 64, 4),
            RecoveryBytesPerSecond = SampleCommandLine.Checked(configuration, "RecoveryRate", "--recovery-rate", RecoveryRateCheck) is { } rate ? ParseRecoveryRate(rate) : 256L << 20,
            RecoveryLatencyFactor = SampleCommandLine.Checked(configuration, "RecoveryLatencyFactor", "--recovery-latency-factor", LatencyFactorCheck) is { } factor ? ParseLatencyFactor(factor) : 1.5,
        };
        foreach (string text in SampleCommandLine.Strings(configuration, "Device"))
        {
            int colon = text.LastIndexOf(':');
            if (colon > 0 && SizeText.TryParse(text[(colon + 1)..], out long size))
            {
                o.Devices.Add((text[..colon], size));
            }
            else
            {
                o.Devices.Add((text, null));
            }
        }

        return o;
    }

    public string? Etcd { get; set; }

    public string? DataDir { get; set; }

    public string NodeId { get; set; } = "";

    public string Listen { get; set; } = "127.0.0.1:7420";

    /// <summary>The address registered for peers, or null for the one the replica server bound.</summary>
    public string? Advertise { get; set; }

    public string? Domain { get; set; }

    public List<(string Path, long? Size)> Devices { get; } = [];

    public string? ClusterKeyFile { get; set; }

    /// <summary>How long a node may stay down before the owners rebuild its replicas elsewhere (--rebuild-after).</summary>
    public TimeSpan RebuildAfter { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>Bytes per second each volume's recovery copies run at; 0 for no pace (--recovery-rate).</summary>
    public long RecoveryBytesPerSecond { get; set; } = 256L << 20;

    private static long ParseRecoveryRate(string text) => text == "off" || !SizeText.TryParse(text, out long rate) ? 0 : rate;

    private static string? RecoveryRateCheck(string text)
        => text == "off" || (SizeText.TryParse(text, out long rate) && rate >= 4096)
            ? null
            : $"'{text}' is not a rate: give bytes per second of at least 4096 (e.g. 64M, 200M) or off";

    /// <summary>How much slower the clients may get before recovery copies slow down; 0 for a fixed rate
    /// (--recovery-latency-factor).</summary>
    public double RecoveryLatencyFactor { get; set; } = 1.5;

    private static double ParseLatencyFactor(string text)
        => text == "fixed" ? 0 : double.Parse(text, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture);

    private static string? LatencyFactorCheck(string text)
        => text == "fixed" || (double.TryParse(text, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double factor) && factor > 1 && factor <= 100)
            ? null
            : $"'{text}' is not a factor: give a number more than 1 and at most 100 (e.g. 1.5, 3) or fixed";

    /// <summary>Extents an owner copies at once per volume in a rebuild (--rebuild-parallel).</summary>
    public int RebuildParallel { get; set; } = 4;

    /// <summary>The replica server reactors' poll window (the host's --poll-us).</summary>
    public TimeSpan PollWindow { get; set; } = TimeSpan.FromMicroseconds(32);

    /// <summary>True when the host runs as a cluster node.</summary>
    public bool Enabled => Etcd != null || DataDir != null;

    /// <summary>Checks the flags together; the exception says what to fix.</summary>
    public void Check(Func<string, Exception> usage)
    {
        if (!Enabled)
        {
            if (Devices.Count > 0 || NodeId.Length > 0)
            {
                throw usage("--node and --device need --etcd URL (a cluster) or --data-dir DIR (the embedded single-node store)");
            }

            return;
        }

        if (Etcd != null && DataDir != null)
        {
            throw usage("give --etcd URL (a cluster) or --data-dir DIR (one node), not both");
        }

        if (NodeId.Length == 0)
        {
            throw usage("a cluster node needs --node ID");
        }

        if (Devices.Count == 0)
        {
            throw usage("a cluster node needs at least one --device FILE[:SIZE] for its replicas");
        }

        if (Advertise != null && (DataDir != null || !System.Net.IPEndPoint.TryParse(Advertise, out var advertised) || advertised.Port == 0))
        {
            throw usage($"--advertise {Advertise}: give HOST:PORT (an IP address and a port) where peers reach this node, with --etcd");
        }

        if (Etcd != null && ClusterKeyFile == null)
        {
            throw usage("a node of an etcd cluster needs --cluster-key-file FILE (the key every node shares; create it with hci cluster key --out FILE)");
        }
    }
}
