using System.Net;
using System.Net.Sockets;
using Hci.Core.Buffers;
using Hci.Core.Reactors;
using Hci.Transport.Scsi;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Hci.Transport.Iscsi;

/// <summary>
/// An iSCSI target (RFC 7143, ErrorRecoveryLevel 0) over TCP, IPv4 or IPv6: discovery and normal sessions,
/// login with AuthMethod None or CHAP (and mutual CHAP), operational negotiation, and the full feature phase
/// for the <see cref="ScsiDisk"/> units it exports as LUNs. Each connection is served on its own; a connection
/// that breaks the protocol is answered as the RFC says (Reject, or a drop) and the others go on.
/// </summary>
/// <remarks>
/// After login a connection runs on one of the target's reactors (<see cref="IscsiTargetOptions.Reactors"/>, a fixed
/// number of threads however many sessions there are), with the reactor's <see cref="Hci.Core.Blocks.BlockQueue"/> on
/// each LUN's device: READ, WRITE and SYNCHRONIZE CACHE go straight to the queue from pooled tasks, so steady I/O
/// allocates nothing and hops no thread. Every request enters the device as <see cref="Hci.Core.Blocks.IoClass.Vm"/> with
/// the session's number as tenant, so a scheduler under the unit's device sees one tenant per initiator session.
/// </remarks>
public sealed class IscsiTarget : IAsyncDisposable
{
    private readonly IscsiTargetOptions _options;
    private readonly IPEndPoint _endpoint;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stop = new();
    private readonly Lock _lock = new();
    private readonly HashSet<IscsiConnection> _connections = [];
    private Socket? _listener;
    private Task? _acceptLoop;
    private readonly ScsiLunMap _lunMap;
    private long _commands;
    private ReactorGroup? _reactors;
    private int _nextTsih;
    private int _nextNexus;
    private const int MaxKnownPorts = 4096;
    private static int s_targets;
    private readonly Dictionary<string, int> _portNexus = new(StringComparer.Ordinal);
    private readonly Dictionary<string, IscsiConnection> _sessions = new(StringComparer.Ordinal);
    private readonly LinkedList<IscsiConnection> _pending = new();
    private readonly HashSet<IscsiConnection> _sessionsOpen = [];

    /// <summary>Creates the target; <see cref="Start"/> opens the portal.</summary>
    /// <param name="options">Settings, checked here.</param>
    /// <param name="luns">The logical units by LUN (0 to 16383).</param>
    /// <param name="logger">Where to log; none by default.</param>
    public IscsiTarget(IscsiTargetOptions options, IReadOnlyDictionary<int, ScsiDisk> luns, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(luns);
        _endpoint = options.Validate();
        if (luns.Keys.Any(l => l is < 0 or > 16383))
        {
            throw new ArgumentException("An iSCSI target's LUNs are 0 to 16383.", nameof(luns));
        }

        _options = options;
        Buffers = new IoBufferBudget(options.MaxBufferedBytes);
        _lunMap = new ScsiLunMap(luns);
        _logger = logger ?? NullLogger.Instance;
    }

    /// <summary>The address the portal listens on (with the port chosen, when 0 was asked).</summary>
    public IPEndPoint LocalEndPoint => (IPEndPoint?)_listener?.LocalEndPoint ?? _endpoint;

    /// <summary>Connections open now.</summary>
    public int ConnectionCount
    {
        get
        {
            lock (_lock)
            {
                return _connections.Count;
            }
        }
    }

    /// <summary>SCSI commands served so far, by connections that have closed and by those still open.</summary>
    public long CommandsServed => Interlocked.Read(ref _commands);

    internal IscsiTargetOptions Options => _options;

    internal ScsiLunMap LunMap => _lunMap;

    internal IReadOnlyDictionary<int, ScsiDisk> Luns => _lunMap.Units;

    /// <summary>
    /// Exports a unit at a free LUN while the target runs. Sessions see it from their next command: REPORT LUNS lists
    /// it, and each session's next command to another LUN gets the unit attention REPORTED LUNS DATA HAS CHANGED.
    /// </summary>
    /// <param name="lun">The LUN (0 to 16383).</param>
    /// <param name="unit">The unit.</param>
    /// <returns>False when the LUN is taken.</returns>
    public bool AddLun(int lun, ScsiDisk unit)
    {
        bool added = _lunMap.TryAdd(lun, unit);
        if (added)
        {
            IscsiLog.LunAdded(_logger, _options.TargetName, lun);
        }

        return added;
    }

    /// <summary>
    /// Stops exporting the unit at a LUN while the target runs: commands that reach the LUN from then on get LOGICAL
    /// UNIT NOT SUPPORTED (commands already running finish on the unit), REPORT LUNS no longer lists it, and each
    /// session's next command to another LUN gets the unit attention REPORTED LUNS DATA HAS CHANGED. The caller closes
    /// the unit's device once the commands in flight on it are done (its own close drains them).
    /// </summary>
    /// <param name="lun">The LUN.</param>
    /// <returns>The unit removed; null when the LUN had none.</returns>
    public ScsiDisk? RemoveLun(int lun)
    {
        var unit = _lunMap.TryRemove(lun);
        if (unit != null)
        {
            IscsiLog.LunRemoved(_logger, _options.TargetName, lun);
        }

        return unit;
    }

    internal ILogger Logger => _logger;

    /// <summary>The reactors the connections' full feature phases share (from <see cref="Start"/> on).</summary>
    internal ReactorGroup Reactors => _reactors ?? throw new InvalidOperationException("The target has not started.");

    /// <summary>
    /// The name its reactors' names start with (<c>name-0</c>, <c>name-1</c> ...): the tag of their
    /// <see cref="ReactorMetrics"/> measurements, such as the bytes allocated on them.
    /// </summary>
    internal string ReactorName { get; } = $"hci-iscsi{Interlocked.Increment(ref s_targets)}";

    /// <summary>Opens the portal and accepts connections.</summary>
    public void Start()
    {
        var socket = new Socket(_endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            if (_endpoint.AddressFamily == AddressFamily.InterNetworkV6 && _endpoint.Address.Equals(IPAddress.IPv6Any))
            {
                socket.DualMode = true;
            }

            socket.Bind(_endpoint);
            socket.Listen(512);
        }
        catch (SocketException e)
        {
            socket.Dispose();
            throw new IOException($"The iSCSI portal cannot listen on {_endpoint}: {e.Message}.", e);
        }

        _listener = socket;
        _reactors = new ReactorGroup(new ReactorGroupOptions
        {
            Count = _options.Reactors > 0 ? _options.Reactors : new ReactorGroupOptions().Count,
            Name = ReactorName,
            PollWindow = _options.PollWindow,
        });
        _acceptLoop = AcceptLoop();
        IscsiLog.Listening(_logger, _options.TargetName, LocalEndPoint, _lunMap.Units.Count);
    }

    /// <summary>Closes the portal and every connection.</summary>
    /// <returns>When all are closed.</returns>
    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        _listener?.Dispose();
        if (_acceptLoop != null)
        {
            await _acceptLoop.ConfigureAwait(false);
        }

        IscsiConnection[] open;
        lock (_lock)
        {
            open = [.. _connections];
        }

        foreach (var c in open)
        {
            await c.CloseAsync().ConfigureAwait(false);
        }

        _reactors?.Dispose();
        _stop.Dispose();
    }

    internal ushort NextTsih()
    {
        int t = Interlocked.Increment(ref _nextTsih) & 0xFFFF;
        return (ushort)(t == 0 ? Interlocked.Increment(ref _nextTsih) : t);
    }

    internal int NextNexus() => Interlocked.Increment(ref _nextNexus);

    /// <summary>Data buffer bytes all connections hold now (see <see cref="IscsiTargetOptions.MaxBufferedBytes"/>).</summary>
    public long BufferedBytes => Buffers.Reserved;

    /// <summary>The budget every connection's task pool draws its buffers from (<see cref="IscsiTargetOptions.MaxBufferedBytes"/>).</summary>
    internal IoBufferBudget Buffers { get; }

    internal void Account(long commands) => Interlocked.Add(ref _commands, commands);

    internal void Closed(IscsiConnection connection)
    {
        lock (_lock)
        {
            _connections.Remove(connection);
            _sessionsOpen.Remove(connection);
            if (connection.PendingNode is { List: not null } node)
            {
                _pending.Remove(node);
            }

            if (connection.SessionPort is { } port && _sessions.TryGetValue(port, out var current) && current == connection)
            {
                _sessions.Remove(port);
            }
        }
    }

    /// <summary>
    /// A connection has logged in: it leaves the pending logins and takes one of <see cref="IscsiTargetOptions.MaxConnections"/>
    /// sessions; false when all are taken.
    /// </summary>
    internal bool TryPromote(IscsiConnection connection)
    {
        lock (_lock)
        {
            if (!_connections.Contains(connection) || _sessionsOpen.Count >= _options.MaxConnections)
            {
                return false;
            }

            if (connection.PendingNode is { List: not null } node)
            {
                _pending.Remove(node);
            }

            _sessionsOpen.Add(connection);
            return true;
        }
    }

    /// <summary>
    /// The I_T nexus number of an initiator port (lower-case name and ISID): the same for every session of that port,
    /// so that SCSI reservations and registrations follow the port. Ports without a session or a registration are
    /// forgotten once many are known (a login flood with random ISIDs cannot grow the table without bound).
    /// </summary>
    internal int NexusFor(string port)
    {
        lock (_lock)
        {
            if (_portNexus.TryGetValue(port, out int nexus))
            {
                return nexus;
            }

            if (_portNexus.Count >= MaxKnownPorts)
            {
                foreach (var (known, n) in _portNexus.ToArray())
                {
                    if (!_sessions.ContainsKey(known) && !_lunMap.Units.Values.Any(l => l.IsRegistered(n)))
                    {
                        _portNexus.Remove(known);
                    }
                }
            }

            nexus = NextNexus();
            _portNexus[port] = nexus;
            return nexus;
        }
    }

    /// <summary>
    /// Makes <paramref name="connection"/> the session of <paramref name="port"/>; a session of that port still open
    /// is closed first, its tasks drained (session reinstatement, RFC 7143 6.3.5).
    /// </summary>
    internal async Task ReinstateAsync(string port, IscsiConnection connection)
    {
        IscsiConnection? old;
        lock (_lock)
        {
            _sessions.TryGetValue(port, out old);
            _sessions[port] = connection;
        }

        if (old != null && old != connection)
        {
            IscsiLog.SessionReinstated(_logger, port);
            await old.CloseAsync().ConfigureAwait(false);
        }
    }

    private async Task AcceptLoop()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _listener!.AcceptAsync(_stop.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException)
            {
                if (_stop.IsCancellationRequested)
                {
                    return;
                }

                await Task.Delay(50).ConfigureAwait(false);
                continue;
            }

            client.NoDelay = true;
            IscsiConnection connection;
            IscsiConnection? dropped = null;
            lock (_lock)
            {
                // Connections still logging in are bounded apart from sessions: when too many are pending, the oldest
                // goes, so that idle TCP connections cannot lock initiators out (sessions are never dropped here).
                if (_pending.Count >= _options.MaxPendingLogins)
                {
                    dropped = _pending.First!.Value;
                    _pending.RemoveFirst();
                }

                connection = new IscsiConnection(this, client);
                _connections.Add(connection);
                connection.PendingNode = _pending.AddLast(connection);
            }

            if (dropped != null)
            {
                IscsiLog.PendingLoginDropped(_logger, _options.MaxPendingLogins, client.RemoteEndPoint);
                _ = dropped.CloseAsync();
            }

            _ = connection.RunAsync(_stop.Token);
        }
    }
}
