using Hci.Core.Blocks;
using Hci.Core.Devices;
using Hci.Samples.Shared;
using Hci.Scheduling;
using Hci.Transport.Vhost;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Hci.Samples.HostType;

/// <summary>hci-hosttype's serving, as a hosted service: <see cref="StartAsync"/> opens the devices, starts a
/// vhost-user-blk server per volume (or joins the cluster) and logs the ready lines; <see cref="StopAsync"/> logs the
/// exit summary and closes everything.</summary>
internal sealed class HostTypeService(HostOptions options, ConsoleLogger logger) : IHostedService, IAsyncDisposable
{
    private readonly List<BlockDevice> _devices = [];
    private readonly List<VhostUserBlkServer> _servers = [];
    private readonly Dictionary<string, VhostUserBlkServer> _clusterServers = [];
    private ClusterNode? _node;
    private long _allocatedAtReady;

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        try
        {
            foreach (var volume in options.Volumes)
            {
                StartVolume(volume);
            }

            if (options.Cluster.Enabled)
            {
                await StartClusterNodeAsync(cancellationToken);
            }
        }
        catch
        {
            await DisposeAsync();
            throw;
        }

        _allocatedAtReady = GC.GetTotalAllocatedBytes(precise: true);
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        long allocated = GC.GetTotalAllocatedBytes(precise: true) - _allocatedAtReady;
        foreach (string line in Hci.Core.Blocks.RequestStages.Snapshot().Format("hci-hosttype: stages: "))
        {
            SampleLog.Stages(logger, line);
        }

        long requests;
        lock (_servers)
        {
            requests = _servers.Sum(s => s.Requests);
            SampleLog.HostTypeStopping(logger, requests,
                _servers.Sum(s => s.Kicks),
                _servers.Sum(s => s.Interrupts),
                allocated,
                requests == 0 ? 0 : (double)allocated / requests);
        }

        await DisposeAsync();
    }

    public async ValueTask DisposeAsync()
    {
        if (_node != null)
        {
            await _node.DisposeAsync();
            _node = null;
        }

        lock (_servers)
        {
            foreach (var server in _servers)
            {
                server.Dispose();
            }

            _servers.Clear();
            _clusterServers.Clear();
        }

        foreach (var device in _devices)
        {
            device.Dispose();
        }

        _devices.Clear();
    }

    private void StartVolume(VolumeSpec volume)
    {
        BlockDevice device = BlockDevices.Open(
            new BlockDeviceOptions
            {
                Engine = volume.Engine,
                Path = volume.Backing,
                Size = volume.Size,
                Direct = !volume.Buffered,
                ReadOnly = volume.ReadOnly,
            },
            logger);
        if (volume.SchedulerKind is { } kind)
        {
            device = new ScheduledBlockDevice(device, new SchedulerOptions { Kind = kind });
        }

        _devices.Add(device);
        var server = new VhostUserBlkServer(
            device,
            new VhostUserBlkServerOptions
            {
                SocketPath = volume.Socket,
                MaxQueues = volume.Queues,
                ReactorThreads = options.Reactors,
                PollWindow = TimeSpan.FromMicroseconds(options.PollMicroseconds),
                ReadOnly = volume.ReadOnly,
                AllowUnsealedMemory = volume.AllowUnsealedMemory,
                Serial = string.IsNullOrEmpty(volume.Serial) ? Path.GetFileNameWithoutExtension(volume.Socket) : volume.Serial,
                Tenant = volume.Tenant,
            },
            logger);
        lock (_servers)
        {
            _servers.Add(server);
        }

        server.Start();
        SampleLog.HostTypeReady(logger, volume.Socket,
            volume.Backing ?? volume.IoEngine,
            device.Geometry.Capacity,
            device.Geometry.LogicalBlockSize,
            volume.IoEngine,
            volume.Scheduler);
    }

    private async Task StartClusterNodeAsync(CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(options.SocketDir!);
        options.Cluster.PollWindow = TimeSpan.FromMicroseconds(options.PollMicroseconds);
        _node = new ClusterNode(options.Cluster, logger)
        {
            VolumeAttached = volume =>
            {
                string socket = Path.Combine(options.SocketDir!, volume.Name + ".sock");
                var server = new VhostUserBlkServer(
                    volume,
                    new VhostUserBlkServerOptions
                    {
                        SocketPath = socket,
                        ReactorThreads = options.Reactors,
                        PollWindow = TimeSpan.FromMicroseconds(options.PollMicroseconds),
                        Serial = volume.Name,
                    },
                    logger);
                server.Start();
                lock (_servers)
                {
                    _servers.Add(server);
                    _clusterServers[volume.Name] = server;
                }

                SampleLog.HostTypeVolumeReady(logger, socket, volume.Name, volume.Geometry.Capacity);
                return Task.CompletedTask;
            },
            VolumeDetaching = volume =>
            {
                lock (_servers)
                {
                    if (_clusterServers.Remove(volume.Name, out var server))
                    {
                        _servers.Remove(server);
                        server.Dispose();
                    }
                }

                return Task.CompletedTask;
            },
        };
        await _node.StartAsync(cancellationToken);
        SampleLog.HostTypeClusterReady(logger, options.Cluster.NodeId, options.SocketDir);
    }
}
