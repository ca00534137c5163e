namespace Hci.Samples.Shared;

/// <summary>How a sample host joins a cluster (<c>--etcd</c>) or runs the embedded single-node store
/// (<c>--data-dir</c>): the flags every host shares.</summary>
internal sealed class ClusterNodeOptions
{
    public const string Usage = """
        Cluster (every volume attached to this node is served; without these the host exports local files):
          --etcd URL[,URL...]  the cluster store (etcd v3), e.g. http://127.0.0.1:2379
          --data-dir DIR       instead of --etcd: the embedded single-node store in DIR (replicas on this node's devices)
          --node ID            this node's id (letters, digits, '-', '_', '.')
          --listen HOST:PORT   where peers reach this node's replicas (with --etcd; default 127.0.0.1:7420)
          --domain PATH        this node's failure domain, e.g. rack1/host2 (default: host/ID)
          --device FILE[:SIZE] a replica store on FILE (created at SIZE if missing; repeatable)
          --cluster-key-file F the cluster's key (random bytes, mode 0600; with --etcd). Create one with
                               hci cluster key --out F
        """;

    public string? Etcd { get; set; }

    public string? DataDir { get; set; }

    public string NodeId { get; set; } = "";

    public string Listen { get; set; } = "127.0.0.1:7420";

    public string? Domain { get; set; }

    public List<(string Path, long? Size)> Devices { get; } = [];

    public string? ClusterKeyFile { get; set; }

    /// <summary>The replica server reactors' poll window (the host's --poll-us).</summary>
    public TimeSpan PollWindow { get; set; } = TimeSpan.FromMicroseconds(32);

    /// <summary>True when the host runs as a cluster node.</summary>
    public bool Enabled => Etcd != null || DataDir != null;

    /// <summary>Takes one cluster flag; false when <paramref name="arg"/> is not one.</summary>
    public bool TryParse(string arg, Func<string> value, Func<string, Exception> usage)
    {
        switch (arg)
        {
            case "--etcd":
                Etcd = value();
                return true;
            case "--data-dir":
                DataDir = value();
                return true;
            case "--node":
                NodeId = value();
                return true;
            case "--listen":
                Listen = value();
                return true;
            case "--domain":
                Domain = value();
                return true;
            case "--cluster-key-file":
                ClusterKeyFile = value();
                return true;
            case "--device":
            {
                string text = value();
                int colon = text.LastIndexOf(':');
                if (colon > 0 && SizeText.TryParse(text[(colon + 1)..], out long size))
                {
                    Devices.Add((text[..colon], size));
                }
                else
                {
                    Devices.Add((text, null));
                }

                return true;
            }

            default:
                return false;
        }
    }

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

        if (Etcd != null && ClusterKeyFile == null)
        {
            throw usage("a node of an etcd cluster needs --cluster-key-file FILE (the key every node shares; create it with hci cluster key --out FILE)");
        }
    }
}
