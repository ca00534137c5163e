using Hci.Core.Cluster;

namespace Hci.Cli;

/// <summary>Where the cluster store is: the one place that turns <c>--data-dir</c> or <c>--etcd</c> into a store.</summary>
internal static class ClusterStores
{
    /// <summary>Opens the store the command line names.</summary>
    /// <returns>The store, and the failure-domain level volumes get by default there: devices for a local store (a
    /// single node whose replicas sit on its own devices), hosts for a cluster.</returns>
    public static (IClusterStore Store, FailureDomainLevel DefaultLevel) Open(string? dataDir, string? etcd)
    {
        if (dataDir is not null && etcd is not null)
        {
            throw new CliUsageException("give --data-dir or --etcd, not both.");
        }

        if (etcd is not null)
        {
            var options = new Hci.Cluster.EtcdClusterStoreOptions { Endpoints = etcd.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) };
            return (Hci.Cluster.EtcdClusterStore.ConnectAsync(options).GetAwaiter().GetResult(), FailureDomainLevel.Host);
        }

        if (dataDir is null)
        {
            throw new CliUsageException("say where the cluster store is: --data-dir DIR (a local, single-node store) or --etcd URL.");
        }

        return (LocalClusterStore.Open(dataDir), FailureDomainLevel.Device);
    }
}
