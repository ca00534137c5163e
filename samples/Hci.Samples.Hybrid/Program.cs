using System.Diagnostics.Metrics;
using System.Runtime.InteropServices;
using Hci.Core.Blocks;
using Hci.Core.Devices;
using Hci.Core.Reactors;
using Hci.Samples.Hybrid;
using Hci.Samples.Shared;
using Hci.Scheduling;
using Hci.Transport.Vhost;
using Microsoft.Extensions.Logging;

// hci-hybrid: the paper's hybrid host. VMs reach the volume through vhost-user-blk sockets as usual, containers through
// their own sockets with the Hci client (no I/O virtualization), and one scheduler per reactor sees both: the class of a
// request is its socket's, the tenant its connection's.
HybridOptions options;
try
{
    options = HybridOptions.Parse(args);
}
catch (UsageException e)
{
    Console.Error.WriteLine($"hci-hybrid: {e.Message}");
    return 2;
}

if (options.Help)
{
    Console.WriteLine(HybridOptions.Usage);
    return 0;
}

var logger = new ConsoleLogger(options.Verbose ? LogLevel.Debug : LogLevel.Information);
var servers = new List<VhostUserBlkServer>();
var devices = new List<BlockDevice>();
var attached = new Dictionary<string, (BlockDevice Device, VhostUserBlkServer[] Servers)>();
ClusterNode? node = null;
ReactorGroup? reactors = null;
using var stats = new ClassStats();
using var stop = new ManualResetEventSlim();
using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, Stop);
using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Stop);
uint self = Tmds.Linux.LibC.getuid();
try
{
    reactors = new ReactorGroup(new ReactorGroupOptions { Count = options.Reactors, Name = "hci-hybrid", PollWindow = TimeSpan.FromMicroseconds(options.PollMicroseconds) });
    if (options.Cluster.Enabled)
    {
        Directory.CreateDirectory(options.SocketDir!);
        options.Cluster.PollWindow = TimeSpan.FromMicroseconds(options.PollMicroseconds);
        node = new ClusterNode(options.Cluster, logger)
        {
            VolumeAttached = volume =>
            {
                // The volume under the node's scheduler, a VM and a container socket on the shared reactors.
                var scheduled = new ScheduledBlockDevice(volume, new SchedulerOptions { Kind = options.SchedulerKind }, ownsInner: false);
                string vm = Path.Combine(options.SocketDir!, volume.Name + ".vm.sock");
                string ct = Path.Combine(options.SocketDir!, volume.Name + ".ct.sock");
                var pair = new[] { Serve(scheduled, vm, IoClass.Vm, volume.Name), Serve(scheduled, ct, IoClass.Container, volume.Name) };
                lock (servers)
                {
                    servers.AddRange(pair);
                    attached[volume.Name] = (scheduled, pair);
                }

                SampleLog.HybridVolumeReady(logger, vm, ct, volume.Name, volume.Geometry.Capacity);
                return Task.CompletedTask;
            },
            VolumeDetaching = volume =>
            {
                lock (servers)
                {
                    if (attached.Remove(volume.Name, out var entry))
                    {
                        foreach (var server in entry.Servers)
                        {
                            servers.Remove(server);
                            server.Dispose();
                        }

                        entry.Device.Dispose();
                        SampleLog.HybridVolumeDetached(logger, volume.Name);
                    }
                }

                return Task.CompletedTask;
            },
        };
        node.StartAsync(CancellationToken.None).GetAwaiter().GetResult();
        SampleLog.HybridClusterReady(logger, options.Cluster.NodeId, options.SocketDir, options.Scheduler);
    }
    else
    {
        var inner = BlockDevices.Open(
            new BlockDeviceOptions { Engine = options.Engine, Path = options.Backing, Size = options.Size, Direct = !options.Buffered },
            logger);
        var device = new ScheduledBlockDevice(inner, new SchedulerOptions { Kind = options.SchedulerKind });
        devices.Add(device);
        foreach (var (socket, cls) in options.VmSockets.Select(s => (s, IoClass.Vm)).Concat(options.ContainerSockets.Select(s => (s, IoClass.Container))))
        {
            servers.Add(Serve(device, socket, cls, Path.GetFileNameWithoutExtension(socket)));
        }

        SampleLog.HybridReady(
            logger,
            options.VmSockets.Count,
            options.ContainerSockets.Count,
            options.Backing ?? options.IoEngine,
            device.Geometry.Capacity,
            options.IoEngine,
            options.Scheduler,
            options.Reactors);
    }

    stop.Wait();
    foreach (var cls in new[] { IoClass.Container, IoClass.Vm })
    {
        var c = stats.For(cls);
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

    lock (servers)
    {
        SampleLog.HybridStopping(logger, servers.Sum(s => s.Requests), servers.Sum(s => s.Kicks), servers.Sum(s => s.Interrupts));
    }

    return 0;
}
catch (Exception e) when (e is ArgumentException or IOException or UnauthorizedAccessException or PlatformNotSupportedException
    or Hci.Core.Cluster.ClusterStoreException or Hci.Core.Cluster.ClusterCatalogException or InvalidDataException)
{
    SampleLog.HostFailed(logger, "hci-hybrid", e.Message);
    return 1;
}
finally
{
    if (node != null)
    {
        node.DisposeAsync().AsTask().GetAwaiter().GetResult(); // detaches: its volumes' servers go first
    }

    lock (servers)
    {
        foreach (var server in servers)
        {
            server.Dispose();
        }

        foreach (var entry in attached.Values)
        {
            entry.Device.Dispose();
        }
    }

    reactors?.Dispose();
    foreach (var device in devices)
    {
        device.Dispose();
    }
}

// One socket of a class on the shared reactors: container sockets admit only the allowed peers (by default our uid).
VhostUserBlkServer Serve(BlockDevice device, string socket, IoClass cls, string serial)
{
    bool container = cls == IoClass.Container;
    var users = container ? options.ContainerUsers : options.VmUsers;
    var groups = container ? options.ContainerGroups : options.VmGroups;
    if (container && users.Count == 0 && groups.Count == 0)
    {
        users = [self]; // the fast class is not for whoever can reach the socket
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
            Reactors = reactors,
        },
        logger);
    server.Start();
    SampleLog.HybridSocketAdmits(
        logger,
        cls,
        socket,
        users.Count + groups.Count == 0 ? "anyone who can open it" : string.Join(", ", users.Select(u => $"uid:{u}").Concat(groups.Select(g => $"gid:{g}"))));
    return server;
}

void Stop(PosixSignalContext context)
{
    context.Cancel = true;
    stop.Set();
}

/// <summary>The scheduler's meter (Hci.Scheduling), summed per class for the exit lines.</summary>
internal sealed class ClassStats : IDisposable
{
    private readonly MeterListener _listener = new();
    private readonly Lock _sync = new();
    private readonly Counts[] _counts = [new(), new(), new()];

    public ClassStats()
    {
        _listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == SchedulingMetrics.MeterName)
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) => Add(instrument.Name, value, tags));
        _listener.SetMeasurementEventCallback<double>((instrument, value, tags, _) => Add(instrument.Name, value, tags));
        _listener.Start();
    }

    public Counts For(IoClass cls)
    {
        lock (_sync)
        {
            return _counts[(int)cls] with { };
        }
    }

    public void Dispose() => _listener.Dispose();

    private void Add(string name, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        int cls = -1;
        foreach (var tag in tags)
        {
            if (tag.Key == "hci.io.class")
            {
                cls = (tag.Value as string) switch { "vm" => 0, "container" => 1, "background" => 2, _ => -1 };
            }
        }

        if (cls < 0)
        {
            return;
        }

        lock (_sync)
        {
            var c = _counts[cls];
            switch (name)
            {
                case "hci.scheduler.ios": c.Ios += (long)value; break;
                case "hci.scheduler.bytes": c.Bytes += (long)value; break;
                case "hci.scheduler.throttled": c.ThrottledUs += value; break;
                case "hci.scheduler.batches": c.Batches += (long)value; break;
                case "hci.scheduler.queued": c.QueuedSum += value; c.QueuedCount++; break;
            }
        }
    }

    internal sealed record Counts
    {
        public long Ios;
        public long Bytes;
        public double ThrottledUs;
        public long Batches;
        public double QueuedSum;
        public long QueuedCount;
    }
}
