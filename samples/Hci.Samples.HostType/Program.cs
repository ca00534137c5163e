using System.Runtime.InteropServices;
using Hci.Core.Blocks;
using Hci.Core.Devices;
using Hci.Samples.HostType;
using Hci.Samples.Shared;
using Hci.Scheduling;
using Hci.Transport.Vhost;
using Microsoft.Extensions.Logging;

// hci-hosttype: the paper's host-type controller. Volumes are exported as vhost-user-blk, so a VM's virtio-blk
// requests reach the device through shared memory, and processes reach the same back-end with the Hci client.
HostOptions options;
try
{
    options = HostOptions.Parse(args);
}
catch (UsageException e)
{
    Console.Error.WriteLine($"hci-hosttype: {e.Message}");
    return 2;
}

if (options.Help)
{
    Console.WriteLine(HostOptions.Usage);
    return 0;
}

var logger = new ConsoleLogger(options.Verbose ? LogLevel.Debug : LogLevel.Information);
var devices = new List<BlockDevice>();
var servers = new List<VhostUserBlkServer>();
var clusterServers = new Dictionary<string, VhostUserBlkServer>();
ClusterNode? node = null;
using var stop = new ManualResetEventSlim();
using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, Stop);
using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Stop);
try
{
    foreach (var volume in options.Volumes)
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

        devices.Add(device);
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
        server.Start();
        servers.Add(server);
        SampleLog.HostTypeReady(
            logger,
            volume.Socket,
            volume.Backing ?? volume.IoEngine,
            device.Geometry.Capacity,
            device.Geometry.LogicalBlockSize,
            volume.IoEngine,
            volume.Scheduler);
    }

    if (options.Cluster.Enabled)
    {
        Directory.CreateDirectory(options.SocketDir!);
        options.Cluster.PollWindow = TimeSpan.FromMicroseconds(options.PollMicroseconds);
        node = new ClusterNode(options.Cluster, logger)
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
                lock (servers)
                {
                    servers.Add(server);
                    clusterServers[volume.Name] = server;
                }

                SampleLog.HostTypeVolumeReady(logger, socket, volume.Name, volume.Geometry.Capacity);
                return Task.CompletedTask;
            },
            VolumeDetaching = volume =>
            {
                lock (servers)
                {
                    if (clusterServers.Remove(volume.Name, out var server))
                    {
                        servers.Remove(server);
                        server.Dispose();
                    }
                }

                return Task.CompletedTask;
            },
        };
        node.StartAsync(CancellationToken.None).GetAwaiter().GetResult();
        SampleLog.HostTypeClusterReady(logger, options.Cluster.NodeId, options.SocketDir);
    }

    long allocatedAtReady = GC.GetTotalAllocatedBytes(precise: true);
    stop.Wait();
    long allocated = GC.GetTotalAllocatedBytes(precise: true) - allocatedAtReady;
    foreach (string line in Hci.Core.Blocks.RequestStages.Snapshot().Format("hci-hosttype: stages: "))
    {
        SampleLog.Stages(logger, line);
    }

    long requests = servers.Sum(s => s.Requests);
    SampleLog.HostTypeStopping(
        logger,
        requests,
        servers.Sum(s => s.Kicks),
        servers.Sum(s => s.Interrupts),
        allocated,
        requests == 0 ? 0 : (double)allocated / requests);
    return 0;
}
catch (Exception e) when (e is ArgumentException or IOException or UnauthorizedAccessException or PlatformNotSupportedException
    or Hci.Core.Cluster.ClusterStoreException or Hci.Core.Cluster.ClusterCatalogException or InvalidDataException)
{
    SampleLog.HostFailed(logger, "hci-hosttype", e.Message);
    return 1;
}
finally
{
    if (node != null)
    {
        node.DisposeAsync().AsTask().GetAwaiter().GetResult();
    }

    foreach (var server in servers)
    {
        server.Dispose();
    }

    foreach (var device in devices)
    {
        device.Dispose();
    }
}

void Stop(PosixSignalContext context)
{
    context.Cancel = true;
    stop.Set();
}
