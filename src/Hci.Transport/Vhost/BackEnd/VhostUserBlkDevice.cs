using Hci.Core.Native;
using Hci.Core.Reactors;
using Hci.Transport.Virtio;
using Microsoft.Extensions.Logging;

namespace Hci.Transport.Vhost;

/// <summary>
/// The virtio-blk device behind one vhost-user session: its features and config space
/// (<see cref="VirtioBlkConfig"/>), and its rings, each served by a <see cref="VirtioBlkQueueProcessor"/> on the
/// server's least loaded data-plane reactor.
/// </summary>
internal sealed class VhostUserBlkDevice : IVhostUserDevice
{
    /// <summary>Protocol features the virtio-blk back-end offers.</summary>
    public const VhostUserProtocolFeatures OfferedProtocol = VhostUserProtocolFeatures.MultiQueue | VhostUserProtocolFeatures.ReplyAck
        | VhostUserProtocolFeatures.Config | VhostUserProtocolFeatures.InflightSharedMemory;

    private readonly VhostUserBlkServer _server;
    private readonly int _session;
    private readonly int _tenant;
    private readonly ILogger _logger;
    private readonly VirtioBlkConfig _config;
    private readonly (ReactorRing Ring, RingPoller Poller, ReactorAssignment Assignment)?[] _started;

    /// <summary>Derives the device from the server's block device and options.</summary>
    /// <param name="server">The server: its device, options and reactors.</param>
    /// <param name="session">The session's number, for logs.</param>
    /// <param name="tenant">The tenant the session's I/O counts against.</param>
    /// <param name="logger">Where to log.</param>
    public VhostUserBlkDevice(VhostUserBlkServer server, int session, int tenant, ILogger logger)
    {
        _server = server;
        _session = session;
        _tenant = tenant;
        _logger = logger;
        var device = server.Device;
        _config = new VirtioBlkConfig(device.Geometry, device.Capabilities, server.Options.MaxQueues, server.Options.ReadOnly);
        _started = new (ReactorRing, RingPoller, ReactorAssignment)?[server.Options.MaxQueues];
    }

    /// <inheritdoc/>
    public int QueueCount => _started.Length;

    /// <inheritdoc/>
    public ulong Features => _config.Features;

    /// <inheritdoc/>
    public VhostUserProtocolFeatures ProtocolFeatures => OfferedProtocol;

    /// <inheritdoc/>
    public int ConfigSize => VirtioBlkConfig.Size;

    /// <inheritdoc/>
    public void SetFeatures(ulong features) => _config.Negotiate(features);

    /// <inheritdoc/>
    public void ReadConfig(int offset, Span<byte> destination) => _config.Read(offset, destination);

    /// <inheritdoc/>
    public bool WriteConfig(int offset, ReadOnlySpan<byte> data) => _config.Write(offset, data);

    /// <inheritdoc/>
    public bool StartRing(VringStart ring)
    {
        var options = _server.Options;
        var served = new ReactorRing($"session {_session} queue {ring.Index}", ring, options.Serial, _tenant, options.Class)
        {
            ReadOnly = _config.ReadOnly,
            WriteThrough = () => _config.WriteThrough,
        };
        var (poller, assignment) = _server.PickReactor();
        try
        {
            poller.Add(served);
        }
        catch (InvalidOperationException e)
        {
            assignment.Dispose();
            VhostLog.QueueCannotStart(_logger, _session, ring.Index, e.Message);
            return false;
        }

        _server.Track(served);
        _started[ring.Index] = (served, poller, assignment);
        return true;
    }

    /// <inheritdoc/>
    public ushort StopRing(int index)
    {
        var (ring, poller, assignment) = _started[index]!.Value;
        _started[index] = null;
        ushort lastAvail = poller.Remove(ring);
        assignment.Dispose();
        _server.Retire(ring);
        return lastAvail;
    }

    /// <inheritdoc/>
    public void SetCall(int index, FileDescriptorHandle? call)
    {
        if (_started[index] is var (ring, poller, _))
        {
            poller.Invoke(() => ring.Call = call);
        }
    }
}
