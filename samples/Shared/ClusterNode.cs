using Hci.Cluster;
using Hci.Core.Blocks;
using Hci.Core.Cluster;
using Hci.Core.Devices;
using Hci.Core.Replication;
using Hci.Transport.Replication;
using Microsoft.Extensions.Logging;

namespace Hci.Samples.Shared;

/// <summary>
/// A host as a cluster node: it opens a replica store on each of its devices, serves them to its peers (with
/// <c>--etcd</c>), registers itself and its devices in the cluster store with a membership lease, and attaches every
/// volume whose owner is this node, handing each to the host's front-end (<see cref="VolumeAttached"/>) and taking it
/// back when it is detached, moved or deleted (<see cref="VolumeDetaching"/>).
/// </summary>
internal sealed partial class ClusterNode : IAsyncDisposable
{
    private static readonly TimeSpan LeaseTtl = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(500);

    private readonly ClusterNodeOptions _options;
    private readonly ConsoleLogger _logger;
    private readonly Dictionary<string, (ReplicatedVolume Volume, ulong Epoch)> _attached = [];
    private readonly Dictionary<string, string> _addresses = [];
    private readonly Lock _addressLock = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly List<BlockDevice> _devices = [];
    private IClusterStore? _store;
    private ClusterCatalog? _catalog;
    private ReplicaNode? _replicas;
    private RemoteReplicaConnector? _remote;
    private ReplicaServer? _server;
    private IStoreLease? _lease;
    private ReplicatedVolume[] _serving = [];
    private Task? _loop;

    public ClusterNode(ClusterNodeOptions options, ConsoleLogger logger)
    {
        _options = options;
        _logger = logger;
    }

    /// <summary>Called with a volume this node now owns, ready to be exported.</summary>
    public Func<ReplicatedVolume, Task> VolumeAttached { get; set; } = _ => Task.CompletedTask;

    /// <summary>Called before an attached volume is closed: the front-end must stop serving it.</summary>
    public Func<ReplicatedVolume, Task> VolumeDetaching { get; set; } = _ => Task.CompletedTask;

    public string NodeId => _options.NodeId;

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        bool cluster = _options.Etcd != null;
        _store = cluster
            ? await EtcdClusterStore.ConnectAsync(new EtcdClusterStoreOptions { Endpoints = _options.Etcd!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) }, cancellationToken: cancellationToken).ConfigureAwait(false)
            : LocalClusterStore.Open(_options.DataDir!);
        _catalog = new ClusterCatalog(_store);

        foreach (var (path, size) in _options.Devices)
        {
            if (!File.Exists(path) && size == null && !path.StartsWith("/dev/", StringComparison.Ordinal))
            {
                throw new ArgumentException($"--device {path}: the file does not exist; give its size to create it (--device {path}:10G)");
            }

            _devices.Add(BlockDevices.Open(new BlockDeviceOptions { Engine = BlockEngine.IoUring, Path = path, Size = size, Direct = true }, _logger));
        }

        if (cluster)
        {
            _remote = new RemoteReplicaConnector(new RemoteReplicaConnectorOptions { NodeId = NodeId, KeyFile = _options.ClusterKeyFile, Resolve = Resolve }, _logger);
        }

        _replicas = await ReplicaNode.OpenAsync(NodeId, _devices, remote: _remote, logger: _logger, cancellationToken: cancellationToken).ConfigureAwait(false);
        if (cluster)
        {
            _server = new ReplicaServer(new ReplicaServerOptions { NodeId = NodeId, Listen = _options.Listen, KeyFile = _options.ClusterKeyFile, PollWindow = _options.PollWindow }, _replicas, _logger);
            _server.Start();
        }

        var record = new NodeRecord
        {
            Id = NodeId,
            Address = cluster ? _options.Advertise ?? $"{_server!.LocalEndPoint.Address}:{_server.LocalEndPoint.Port}" : _options.Listen,
            Domain = _options.Domain ?? $"host/{NodeId}",
            Devices = [.. _replicas.Stores.Select((s, i) => new DeviceRecord { Index = i, Capacity = s.SlotCount * s.ExtentSize, Weight = DeviceRecord.WeightOf(s.SlotCount * s.ExtentSize) })],
        };
        await _catalog.RegisterNodeAsync(record, cancellationToken).ConfigureAwait(false);
        await TakeLeaseAsync(cancellationToken).ConfigureAwait(false);
        await RefreshAddressesAsync(cancellationToken).ConfigureAwait(false);
        SampleLog.NodeReady(
            _logger,
            NodeId,
            _devices.Count,
            _replicas.Stores.Sum(s => s.FreeSlots),
            cluster ? $"replicas served on {record.Address}, store {_options.Etcd}" : $"single-node store in {_options.DataDir}");

        await SyncAsync(cancellationToken).ConfigureAwait(false);
        _loop = Task.Run(() => LoopAsync(_stop.Token), CancellationToken.None);
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        if (_loop != null)
        {
            try
            {
                await _loop.ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
            }
        }

        foreach (var name in _rebuilds.Keys.ToArray())
        {
            await StopRebuildAsync(name).ConfigureAwait(false);
        }

        foreach (var name in _attached.Keys.ToArray())
        {
            await CloseAsync(name, clean: true).ConfigureAwait(false);
        }

        if (_server != null)
        {
            await _server.DisposeAsync().ConfigureAwait(false);
        }

        _replicas?.Dispose();
        _remote?.Dispose();
        foreach (var device in _devices)
        {
            await device.DisposeAsync().ConfigureAwait(false);
        }

        if (_lease != null)
        {
            await _lease.DisposeAsync().ConfigureAwait(false);
        }

        if (_store != null)
        {
            await _store.DisposeAsync().ConfigureAwait(false);
        }

        _stop.Dispose();
    }

    private async Task LoopAsync(CancellationToken cancellationToken)
    {
        while (!cancellationToken.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(PollInterval, cancellationToken).ConfigureAwait(false);
                await RefreshAddressesAsync(cancellationToken).ConfigureAwait(false);

                // Checked right before the sync (the calls above may have waited on an unreachable store meanwhile):
                // volumes are attached only under a lease that holds.
                if (_lease!.Lost.IsCompleted)
                {
                    SampleLog.MembershipLost(_logger, NodeId);
                    await TakeLeaseAsync(cancellationToken).ConfigureAwait(false);
                }

                await SyncAsync(cancellationToken).ConfigureAwait(false);
                await PollScrubsAsync(cancellationToken).ConfigureAwait(false);
                await RebuildTickAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e)
            {
                SampleLog.NodeSyncFailed(_logger, NodeId, e.Message);
            }
        }
    }

    // Attaches what the store says this node owns, and closes what it no longer owns (or owns at a newer epoch, which
    // means it was re-attached: the old attachment is fenced).
    private async Task SyncAsync(CancellationToken cancellationToken)
    {
        var volumes = await _catalog!.ListVolumesAsync(cancellationToken).ConfigureAwait(false);
        var mine = volumes.Where(v => v.Owner == NodeId).ToDictionary(v => v.Name);
        foreach (var (name, (volume, _)) in _attached.ToArray())
        {
            if (!mine.ContainsKey(name) || volume.IsFenced)
            {
                // Detached or moved (a new owner fences this one), deleted, or fenced by a replica.
                await CloseAsync(name, clean: !volume.IsFenced).ConfigureAwait(false);
            }
        }

        foreach (var (name, owned) in mine)
        {
            if (_attached.ContainsKey(name))
            {
                continue;
            }

            if (_lease!.Lost.IsCompleted)
            {
                break; // the next turn takes a new lease first
            }

            var record = owned;
            try
            {
                // Every attachment takes an epoch of its own, by compare-and-swap: a previous instance of this node (one
                // that was restarted, or cut off and still running) is fenced by every replica like any other owner.
                record = await _catalog.AttachAsync(name, NodeId, force: false, cancellationToken).ConfigureAwait(false);
                var volume = await CatalogVolumeControl.OpenVolumeAsync(_catalog, name, NodeId, _replicas!, new ReplicatedVolumeOptions { LoggerFactory = _logger, RecoveryBytesPerSecond = _options.RecoveryBytesPerSecond, RecoveryLatencyFactor = _options.RecoveryBytesPerSecond == 0 ? 0 : _options.RecoveryLatencyFactor }, cancellationToken).ConfigureAwait(false);
                _attached[name] = (volume, record.Epoch);
                Volatile.Write(ref _serving, [.. _attached.Values.Select(a => a.Volume)]);
                if (_lease!.Lost.IsCompleted)
                {
                    volume.Revoke("this node's membership lease was lost while it attached the volume");
                }

                SampleLog.VolumeAttached(_logger, NodeId, name, record.Size, record.Replicas, record.Epoch, volume.Stats.ReconciledRegions);
                await VolumeAttached(volume).ConfigureAwait(false);
            }
            catch (Exception e) when (e is ReplicationException or ClusterCatalogException or ClusterStoreException)
            {
                SampleLog.AttachFailed(_logger, NodeId, name, e.Message);
            }
        }
    }

    private async Task CloseAsync(string name, bool clean)
    {
        var (volume, _) = _attached[name];
        _attached.Remove(name);
        Volatile.Write(ref _serving, [.. _attached.Values.Select(a => a.Volume)]);
        await StopRebuildAsync(name).ConfigureAwait(false);
        try
        {
            await VolumeDetaching(volume).ConfigureAwait(false);
            if (clean && !volume.IsFenced)
            {
                await volume.FlushAsync().ConfigureAwait(false);
                await volume.DetachAsync().ConfigureAwait(false);
            }
        }
        catch (Exception e)
        {
            SampleLog.DetachFailed(_logger, NodeId, name, e.Message);
        }
        finally
        {
            await volume.DisposeAsync().ConfigureAwait(false);
            SampleLog.VolumeDetached(_logger, NodeId, name);
        }
    }

    // The membership lease says this node is alive. When it is lost (etcd unreachable for a whole TTL, or etcd says it
    // expired), another node may attach this node's volumes once etcd lets the lease lapse: every attached volume stops
    // serving at once, before that can happen, so a node cut off from the cluster neither acknowledges a write nor
    // serves a read that a new owner could have made stale. The loop then takes a new lease and re-attaches (a new
    // epoch) what still belongs to it.
    private async Task TakeLeaseAsync(CancellationToken cancellationToken)
    {
        var lease = await _store!.GrantLeaseAsync(LeaseTtl, cancellationToken).ConfigureAwait(false);
        _lease = lease;
        _ = lease.Lost.ContinueWith(
            _ =>
            {
                foreach (var volume in Volatile.Read(ref _serving))
                {
                    volume.Revoke("this node's membership lease was lost: another node may own the volume once it lapses");
                }
            },
            CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously,
            TaskScheduler.Default);
        await _catalog!.SetAliveAsync(NodeId, lease, cancellationToken).ConfigureAwait(false);
    }

    private async Task RefreshAddressesAsync(CancellationToken cancellationToken)
    {
        var nodes = await _catalog!.ListNodesAsync(cancellationToken).ConfigureAwait(false);
        lock (_addressLock)
        {
            foreach (var node in nodes)
            {
                _addresses[node.Id] = node.Address;
            }
        }
    }

    private string? Resolve(string nodeId)
    {
        lock (_addressLock)
        {
            return _addresses.GetValueOrDefault(nodeId);
        }
    }
}
