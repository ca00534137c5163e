using System.Collections.Frozen;
using Hci.Core.Blocks;
using Hci.Core.Devices;
using Hci.Core.Reactors;
using Hci.Scheduling;
using Hci.Transport.Iscsi;
using Hci.Transport.Scsi;
using Hci.Transport.Vhost;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Hci.Hosting;

/// <summary>
/// The host's Hci devices and servers while they run: resolve it from the service provider to use a device from
/// application code or to read a server's counters. The hosted service that
/// <see cref="HciServiceCollectionExtensions.AddHci(Microsoft.Extensions.DependencyInjection.IServiceCollection)"/>
/// registers starts and stops it.
/// </summary>
/// <remarks>
/// Start opens the devices in registration order (each under its scheduler, if it names one), then starts the
/// vhost-user-blk sockets, then the iSCSI targets; it returns once every socket and portal listens, so a host that
/// reports readiness after its hosted services start (systemd's <c>READY=1</c>) is ready for front-ends. Stop goes in
/// reverse: targets and sockets close (each lets its front-ends' requests in flight complete and removes its socket
/// file), then the devices close.
/// </remarks>
public sealed class HciRuntime
{
    private static readonly FrozenDictionary<string, BlockDevice> s_noDevices = FrozenDictionary<string, BlockDevice>.Empty;
    private static readonly FrozenDictionary<string, VhostUserBlkServer> s_noSockets = FrozenDictionary<string, VhostUserBlkServer>.Empty;
    private static readonly FrozenDictionary<string, IscsiTarget> s_noTargets = FrozenDictionary<string, IscsiTarget>.Empty;

    private readonly HciRegistry _registry;
    private readonly IServiceProvider _services;
    private readonly IOptionsMonitor<HciOptions> _options;
    private readonly IOptionsMonitor<HciDeviceOptions> _deviceOptions;
    private readonly IOptionsMonitor<SchedulerOptions> _schedulerOptions;
    private readonly IOptionsMonitor<HciVhostUserBlkOptions> _vhostOptions;
    private readonly IOptionsMonitor<HciIscsiTargetOptions> _iscsiOptions;
    private readonly ILoggerFactory _loggerFactory;
    private readonly ILogger _logger;
    private readonly SemaphoreSlim _transition = new(1, 1);
    private volatile HciRuntimeState _state;
    private volatile string? _failureReason;
    private volatile FrozenDictionary<string, BlockDevice> _devices = s_noDevices;
    private volatile FrozenDictionary<string, VhostUserBlkServer> _sockets = s_noSockets;
    private volatile FrozenDictionary<string, IscsiTarget> _targets = s_noTargets;
    private ReactorGroup? _reactors;

    internal HciRuntime(
        HciRegistry registry,
        IServiceProvider services,
        IOptionsMonitor<HciOptions> options,
        IOptionsMonitor<HciDeviceOptions> deviceOptions,
        IOptionsMonitor<SchedulerOptions> schedulerOptions,
        IOptionsMonitor<HciVhostUserBlkOptions> vhostOptions,
        IOptionsMonitor<HciIscsiTargetOptions> iscsiOptions,
        ILoggerFactory loggerFactory)
    {
        _registry = registry;
        _services = services;
        _options = options;
        _deviceOptions = deviceOptions;
        _schedulerOptions = schedulerOptions;
        _vhostOptions = vhostOptions;
        _iscsiOptions = iscsiOptions;
        _loggerFactory = loggerFactory;
        _logger = loggerFactory.CreateLogger("Hci.Hosting");
    }

    /// <summary>Where the devices and servers are in their life.</summary>
    public HciRuntimeState State => _state;

    /// <summary>Why start failed (<see cref="HciRuntimeState.Failed"/>); null otherwise.</summary>
    public string? FailureReason => _failureReason;

    /// <summary>The open devices by name, each as servers see it (under its scheduler, if any); empty unless running.</summary>
    public IReadOnlyDictionary<string, BlockDevice> Devices => _devices;

    /// <summary>The listening vhost-user-blk servers by name; empty unless running.</summary>
    public IReadOnlyDictionary<string, VhostUserBlkServer> VhostUserBlkServers => _sockets;

    /// <summary>The listening iSCSI targets by name; empty unless running.</summary>
    public IReadOnlyDictionary<string, IscsiTarget> IscsiTargets => _targets;

    /// <summary>The open device named <paramref name="name"/>.</summary>
    /// <param name="name">The name it was registered under.</param>
    /// <returns>The device, as servers see it (under its scheduler, if any).</returns>
    /// <exception cref="InvalidOperationException">The host is not running, or no device has that name.</exception>
    public BlockDevice GetDevice(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (_devices.TryGetValue(name, out var device))
        {
            return device;
        }

        throw new InvalidOperationException(_state != HciRuntimeState.Running
            ? $"Hci is {_state.ToString().ToLowerInvariant()}: devices are open only while the host runs."
            : $"No Hci device is named '{name}' (the devices are {string.Join(", ", _devices.Keys)}).");
    }

    /// <summary>Opens the devices and starts the servers; on failure stops what started and throws.</summary>
    internal async Task StartAsync(CancellationToken cancellationToken)
    {
        await _transition.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_state != HciRuntimeState.NotStarted)
            {
                throw new InvalidOperationException($"Hci is {_state.ToString().ToLowerInvariant()}: it starts once per host.");
            }

            _state = HciRuntimeState.Starting;
            var devices = new Dictionary<string, BlockDevice>(StringComparer.Ordinal);
            var sockets = new Dictionary<string, VhostUserBlkServer>(StringComparer.Ordinal);
            var targets = new Dictionary<string, IscsiTarget>(StringComparer.Ordinal);
            try
            {
                Start(devices, sockets, targets, cancellationToken);
            }
            catch (Exception e)
            {
                _failureReason = e.Message;
                _state = HciRuntimeState.Failed;
                HciHostingLog.StartFailed(_logger, e.Message);
                await TearDownAsync(devices, sockets, targets).ConfigureAwait(false);
                throw;
            }

            _devices = devices.ToFrozenDictionary(StringComparer.Ordinal);
            _sockets = sockets.ToFrozenDictionary(StringComparer.Ordinal);
            _targets = targets.ToFrozenDictionary(StringComparer.Ordinal);
            _state = HciRuntimeState.Running;
            HciHostingLog.Ready(_logger, devices.Count, sockets.Count, targets.Count);
        }
        finally
        {
            _transition.Release();
        }
    }

    /// <summary>Stops the servers (front-ends' requests in flight complete, socket files go), then closes the devices.</summary>
    internal async Task StopAsync()
    {
        await _transition.WaitAsync().ConfigureAwait(false);
        try
        {
            if (_state != HciRuntimeState.Running)
            {
                return;
            }

            _state = HciRuntimeState.Stopping;
            HciHostingLog.Stopping(_logger);
            var devices = new Dictionary<string, BlockDevice>(_devices, StringComparer.Ordinal);
            var sockets = new Dictionary<string, VhostUserBlkServer>(_sockets, StringComparer.Ordinal);
            var targets = new Dictionary<string, IscsiTarget>(_targets, StringComparer.Ordinal);
            long requests = sockets.Values.Sum(s => s.Requests);
            _devices = s_noDevices;
            _sockets = s_noSockets;
            _targets = s_noTargets;
            long commands = await TearDownAsync(devices, sockets, targets).ConfigureAwait(false);
            _state = HciRuntimeState.Stopped;
            HciHostingLog.Stopped(_logger, requests, commands);
        }
        finally
        {
            _transition.Release();
        }
    }

    private void Start(Dictionary<string, BlockDevice> devices, Dictionary<string, VhostUserBlkServer> sockets, Dictionary<string, IscsiTarget> targets, CancellationToken cancellationToken)
    {
        CheckSocketsDistinct();
        foreach (var entry in _registry.Devices)
        {
            cancellationToken.ThrowIfCancellationRequested();
            devices.Add(entry.Name, OpenDevice(entry));
        }

        var hci = _options.CurrentValue;
        if (hci.Reactors > 0 && _registry.VhostUserBlk.Count > 0)
        {
            _reactors = new ReactorGroup(new ReactorGroupOptions { Count = hci.Reactors, Name = "hci-host", PollWindow = hci.PollWindow });
        }

        foreach (var entry in _registry.VhostUserBlk)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var options = _vhostOptions.Get(entry.Name);
            var device = devices[options.Device];
            var server = options.Server.Resolve();
            if (string.IsNullOrEmpty(server.Serial))
            {
                server.Serial = entry.Name;
            }

            server.Reactors ??= _reactors;
            VhostUserBlkServer? started = null;
            try
            {
                started = new VhostUserBlkServer(device, server, _loggerFactory.CreateLogger("Hci.Transport.Vhost"));
                started.Start();
            }
            catch (Exception e) when (e is IOException or ArgumentException or UnauthorizedAccessException)
            {
                started?.Dispose();
                throw new InvalidOperationException($"{entry.Path}: cannot listen on '{server.SocketPath}': {e.Message}", e);
            }

            sockets.Add(entry.Name, started);
            HciHostingLog.VhostReady(_logger, entry.Name, server.SocketPath, options.Device);
        }

        foreach (var entry in _registry.Iscsi)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var options = _iscsiOptions.Get(entry.Name);
            var luns = options.Luns.ToDictionary(l => l.Key, l => new ScsiDisk(devices[l.Value], l.Value));
            IscsiTarget target;
            try
            {
                target = new IscsiTarget(options.Target, luns, _loggerFactory.CreateLogger("Hci.Transport.Iscsi"));
                target.Start();
            }
            catch (Exception e) when (e is IOException or ArgumentException)
            {
                throw new InvalidOperationException($"{entry.Path}: the target cannot start on '{options.Target.Portal}': {e.Message}", e);
            }

            targets.Add(entry.Name, target);
            HciHostingLog.IscsiReady(_logger, entry.Name, options.Target.TargetName, target.LocalEndPoint.ToString(), luns.Count);
        }
    }

    private BlockDevice OpenDevice(HciRegistry.Entry entry)
    {
        if (entry.Factory != null)
        {
            try
            {
                return entry.Factory(_services) ?? throw new InvalidOperationException("the factory returned null");
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                throw new InvalidOperationException($"Hci device '{entry.Name}' could not be made: {e.Message}", e);
            }
        }

        var options = _deviceOptions.Get(entry.Name);
        HciNames.TryParseEngine(options.Engine, out var engine);
        SchedulerOptions? scheduler = null;
        if (_registry.Schedulers.ContainsKey(options.Scheduler ?? ""))
        {
            scheduler = _schedulerOptions.Get(options.Scheduler);
        }
        else if (HciNames.TryParseSchedulerKind(options.Scheduler, out var kind) && kind is { } k)
        {
            scheduler = new SchedulerOptions { Kind = k };
        }

        BlockDevice device;
        try
        {
            device = BlockDevices.Open(
                new BlockDeviceOptions
                {
                    Engine = engine,
                    Path = options.Path,
                    Size = options.Size,
                    Direct = options.Direct,
                    ReadOnly = options.ReadOnly,
                    LogicalBlockSize = options.LogicalBlockSize,
                    MaxTransferBytes = options.MaxTransferBytes,
                },
                _loggerFactory);
        }
        catch (Exception e) when (e is IOException or ArgumentException or UnauthorizedAccessException or PlatformNotSupportedException)
        {
            throw new InvalidOperationException($"{entry.Path}: the device cannot open{(options.Path is { } p ? $" '{p}'" : "")}: {e.Message}", e);
        }

        if (scheduler != null)
        {
            try
            {
                device = new ScheduledBlockDevice(device, scheduler);
            }
            catch
            {
                device.Dispose(); // the wrapper refused it: the open device is ours to close
                throw;
            }
        }

        HciHostingLog.DeviceOpened(_logger, entry.Name, device.Engine, device.Geometry.Capacity, device.Geometry.LogicalBlockSize, scheduler?.Kind.ToString().ToLowerInvariant() ?? "none");
        return device;
    }

    private void CheckSocketsDistinct()
    {
        var seen = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var entry in _registry.VhostUserBlk)
        {
            string socket = Path.GetFullPath(_vhostOptions.Get(entry.Name).Server.SocketPath);
            if (!seen.TryAdd(socket, entry.Path))
            {
                throw new InvalidOperationException($"{entry.Path}:SocketPath: '{socket}' is also the socket of {seen[socket]}; give each its own path.");
            }
        }
    }

    private async Task<long> TearDownAsync(Dictionary<string, BlockDevice> devices, Dictionary<string, VhostUserBlkServer> sockets, Dictionary<string, IscsiTarget> targets)
    {
        long commands = 0;
        foreach (var (name, target) in targets.Reverse())
        {
            try
            {
                await target.DisposeAsync().ConfigureAwait(false); // closes every connection, which accounts its commands
                commands += target.CommandsServed;
            }
            catch (Exception e)
            {
                HciHostingLog.StopFailed(_logger, e, $"iSCSI target {name}");
            }
        }

        foreach (var (name, server) in sockets.Reverse())
        {
            try
            {
                server.Dispose(); // waits for the front-ends' requests in flight, then removes the socket file
            }
            catch (Exception e)
            {
                HciHostingLog.StopFailed(_logger, e, $"vhost-user-blk socket {name}");
            }
        }

        _reactors?.Dispose();
        _reactors = null;
        foreach (var (name, device) in devices.Reverse())
        {
            try
            {
                await device.DisposeAsync().ConfigureAwait(false);
            }
            catch (Exception e)
            {
                HciHostingLog.StopFailed(_logger, e, $"device {name}");
            }
        }

        return commands;
    }
}
