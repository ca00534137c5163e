using Hci.Core.Blocks;
using Hci.Core.Devices;
using Hci.Core.Reactors;
using Hci.Samples.Shared;
using Hci.Scheduling;
using Hci.Transport.Vhost;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Hci.Samples.Hybrid;

/// <summary>hci-hybrid's serving, as a hosted service: <see cref="StartAsync"/> starts the shared reactors and the
/// sockets (or joins the cluster) and logs the ready line; <see cref="StopAsync"/> logs the per-class exit summary and
/// closes everything.</summary>
internal sealed class HybridService(HybridOptions options, ConsoleLogger logger) : IHostedService, IAsyncDisposable
{
    private readonly List<VhostUserBlkServer> _servers = [];
    private readonly List<BlockDevice> _devices = [];
    private readonly Dictionary<string, (BlockDevice Device, VhostUserBlkServer[] Servers)> _attached = [];
    private readonly ClassStats _stats = new();
    private readonly uint _self = Tmds.Linux.LibC.getuid();
    private ClusterNode? _node;
    private ReactorGroup? _reactors;

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        try
        {
            _reactors = new ReactorGroup(new ReactorGroupOptions { Count = options.Reactors, Name = "hci-hybrid", PollWindow = TimeSpan.FromMicroseconds(options.PollMicroseconds) });
            if (options.Cluster.Enabled)
            {
                Directory.CreateDirectory(options.SocketDir!);
                options.Cluster.PollWindow = TimeSpan.FromMicroseconds(options.PollMicroseconds);
                _node = new ClusterNode(options.Cluster, logger)
                {
                    VolumeAttached = volume =>
                    {
                        // The volume under the node's scheduler, a VM and a container socket on the shared reactors.
                        var scheduled = new ScheduledBlockDevice(volume, options.SchedulerOptions(), ownsInner: false);
                        string vm = Path.Combine(options.SocketDir!, volume.Name + ".vm.sock");
                        string ct = Path.Combine(options.SocketDir!, volume.Name + ".ct.sock");
                        var pair = new[] { Serve(scheduled, vm, IoClass.Vm, volume.Name), Serve(scheduled, ct, IoClass.Container, volume.Name) };
                        lock (_servers)
                        {
                            _servers.AddRange(pair);
                            _attached[volume.Name] = (scheduled, pair);
                        }

                        SampleLog.HybridVolumeReady(logger, vm, ct, volume.Name, volume.Geometry.Capacity);
                        return Task.CompletedTask;
                    },
                    VolumeDetaching = volume =>
                    {
                        lock (_servers)
                        {
                            if (_attached.Remove(volume.Name, out var entry))
                            {
                                foreach (var server in entry.Servers)
                                {
                                    _servers.Remove(server);
                                    server.Dispose();
                                }

                                entry.Device.Dispose();
                                SampleLog.HybridVolumeDetached(logger, volume.Name);
                            }
                        }

                        return Task.CompletedTask;
                    },
                };
                await _node.StartAsync(cancellationToken);
                SampleLog.HybridClusterReady(logger, options.Cluster.NodeId, options.SocketDir, options.Scheduler);
            }
            else
            {
                var inner = BlockDevices.Open(
                    new BlockDeviceOptions { Engine = options.Engine, Path = options.Backing, Size = options.Size, Direct = !options.Buffered },
                    logger);
                var device = new ScheduledBlockDevice(inner, options.SchedulerOptions());
                _devices.Add(device);
                foreach (var (socket, cls) in options.VmSockets.Select(s => (s, IoClass.Vm)).Concat(options.ContainerSockets.Select(s => (s, IoClass.Container))))
                {
                    _servers.Add(Serve(device, socket, cls, Path.GetFileNameWithoutExtension(socket)));
                }

                SampleLog.HybridReady(logger, options.VmSockets.Count,
                    options.ContainerSockets.Count,
                    options.Backing ?? options.IoEngine,
                    device.Geometry.Capacity,
                    options.IoEngine,
                    options.Scheduler,
                    options.Reactors);
            }
        }
        catch
        {
            await DisposeAsync();
            throw;
        }
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        foreach (var cls in new[] { IoClass.Container, IoClass.Vm })
        {
            var c = _stats.For(cls);
            SampleLog.HybridClassStopping(
                logger,
                cls,
                c.Ios,
                c.Bytes,
                c.QueuedCount == 0 ? 0 : c.QueuedSum / c.QueuedCount,
                c.ThrottledUs / 1000,
                c.Batches);
        }

        foreach (string line in Hci.Core.Blocks.RequestStages.Snapshot().Format("hci-hybrid: stages: "))
        {
            SampleLog.Stages(logger, line);
        }

        lock (_servers)
        {
            SampleLog.HybridStopping(logger, _servers.Sum(s => s.Requests), _servers.Sum(s => s.Kicks), _servers.Sum(s => s.Interrupts));
        }

        await DisposeAsync();
    }

    public async ValueTask DisposeAsync()
    {
        if (_node != null)
        {
            await _node.DisposeAsync(); // detaches: its volumes' servers go first
            _node = null;
        }

        lock (_servers)
        {
            foreach (var server in _servers)
            {
                server.Dispose();
            }

            foreach (var entry in _attached.Values)
            {
                entry.Device.Dispose();
            }

            _servers.Clear();
            _attached.Clear();
        }

        _reactors?.Dispose();
        _reactors = null;
        foreach (var device in _devices)
        {
            device.Dispose();
        }

        _devices.Clear();
        _stats.Dispose();
    }

    // One socket of a class on the shared reactors: container sockets admit only the allowed peers (by default our uid).
    private VhostUserBlkServer Serve(BlockDevice device, string socket, IoClass cls, string serial)
    {
        bool container = cls == IoClass.Container;
        var users = container ? options.ContainerUsers : options.VmUsers;
        var groups = container ? options.ContainerGroups : options.VmGroups;
        if (container && users.Count == 0 && groups.Count == 0)
        {
            users = [_self]; // the fast class is not for whoever can reach the socket
        }

        var server = new VhostUserBlkServer(
            device,
            new VhostUserBlkServerOptions
            {
                SocketPath = socket,
                Serial = serial,
                Class = cls,
                TenantPerConnection = true,
                AllowedUsers = users,
                AllowedGroups = groups,
                Reactors = _reactors,
            },
            logger);
        server.Start();
        SampleLog.HybridSocketAdmits(logger, cls,
            socket,
            users.Count + groups.Count == 0 ? "anyone who can open it" : string.Join(", ", users.Select(u => $"uid:{u}").Concat(groups.Select(g => $"gid:{g}"))));
        return server;
    }
}
