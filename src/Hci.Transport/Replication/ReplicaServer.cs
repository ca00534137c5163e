using System.Collections.Concurrent;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using Hci.Core.Reactors;
using Hci.Core.Replication;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Hci.Transport.Replication;

/// <summary>
/// The replica side of the node-to-node protocol: accepts connections from other nodes, authenticates them on the
/// cluster key (and TLS, when configured), then serves each on one of its reactors, handing their requests to this
/// node's replica stores through a <see cref="ReplicaChannel"/> per reactor from the local
/// <see cref="IReplicaConnector"/>.
/// </summary>
/// <remarks>
/// <para>Connection set-up (TLS, the challenge-response) runs on the thread pool with a deadline
/// (<see cref="ReplicaServerOptions.HandshakeTimeout"/>); nothing but handshake frames is read before it succeeds, so an
/// unauthenticated peer reaches no replica. Then the socket moves to the least loaded reactor, which reads frames, checks
/// them (lengths, offsets and every field against the connection's bounds; a malformed frame ends that connection
/// only), checks a write's payload checksums before it is submitted, and writes the answers. Requests and their buffers
/// come from a bounded per-connection pool: a connection at its limit is not read (TCP pushes back), and steady I/O
/// allocates nothing.</para>
/// </remarks>
public sealed class ReplicaServer : IAsyncDisposable
{
    private readonly ReplicaServerOptions _options;
    private readonly IReplicaConnector _local;
    private readonly ILogger _logger;
    private readonly IPEndPoint _endpoint;
    private readonly byte[] _key;
    private readonly X509Certificate2? _certificate;
    private readonly bool _ownsReactors;
    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentDictionary<Reactor, ReplicaChannel> _channels = new();
    private readonly ConcurrentDictionary<ReplicaServerConnection, byte> _connections = new();
    private ReactorGroup? _reactors;
    private Socket? _listener;
    private Task? _acceptLoop;
    private int _open;
    private long _requests;
    private long _refused;
    private static int s_servers;

    /// <summary>Creates the server; <see cref="Start"/> listens.</summary>
    /// <param name="options">Settings, checked here (the key file's mode, the certificate).</param>
    /// <param name="local">Opens the channel to this node's replica stores on each reactor (a <c>ReplicaNode</c>).</param>
    /// <param name="logger">Where to log; none by default.</param>
    /// <param name="reactors">Reactors to serve connections on (shared with the node's other work), or null for a group of the server's own.</param>
    /// <exception cref="ArgumentException">The options are invalid.</exception>
    /// <exception cref="UnauthorizedAccessException">The key file may be read by others (see <see cref="ClusterKey.Load"/>).</exception>
    public ReplicaServer(ReplicaServerOptions options, IReplicaConnector local, ILogger? logger = null, ReactorGroup? reactors = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(local);
        _endpoint = options.ValidateEndpoint();
        _options = options;
        _local = local;
        _logger = logger ?? NullLogger.Instance;
        _key = options.LoadKey();
        _certificate = options.LoadCertificate();
        _reactors = reactors;
        _ownsReactors = reactors == null;
    }

    /// <summary>The address it listens on (with the port chosen, when 0 was asked).</summary>
    public IPEndPoint LocalEndPoint => (IPEndPoint?)_listener?.LocalEndPoint ?? _endpoint;

    /// <summary>Connections open now (authenticating or serving).</summary>
    public int ConnectionCount => Volatile.Read(ref _open);

    /// <summary>Requests handed to the local stores so far.</summary>
    public long RequestsServed => Interlocked.Read(ref _requests);

    /// <summary>Connections closed before they were authenticated (bad key, malformed or late handshake), so far.</summary>
    public long HandshakesRefused => Interlocked.Read(ref _refused);

    internal ReplicaServerOptions Options => _options;

    internal ILogger Logger => _logger;

    /// <summary>The name its own reactors' names start with (the tag of their allocation meter).</summary>
    internal string ReactorName { get; } = $"hci-replica{Interlocked.Increment(ref s_servers)}";

    /// <summary>Listens and accepts connections.</summary>
    /// <exception cref="IOException">The address cannot be bound.</exception>
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
            throw new IOException($"The replica server cannot listen on {_endpoint}: {e.Message}.", e);
        }

        _listener = socket;
        _reactors ??= new ReactorGroup(new ReactorGroupOptions
        {
            Count = _options.Reactors > 0 ? _options.Reactors : new ReactorGroupOptions().Count,
            Name = ReactorName,
            PollWindow = _options.PollWindow,
        });
        _acceptLoop = AcceptLoop();
        ReplicaProtocolLog.Listening(_logger, _options.NodeId, LocalEndPoint.ToString(), _certificate != null);
    }

    /// <summary>Stops listening, closes every connection (after its requests in the stores complete) and the local channels.</summary>
    /// <returns>When all are closed.</returns>
    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        _listener?.Dispose();
        if (_acceptLoop != null)
        {
            await _acceptLoop.ConfigureAwait(false);
        }

        foreach (var connection in _connections.Keys)
        {
            await connection.CloseAsync().ConfigureAwait(false);
        }

        foreach (var (reactor, channel) in _channels)
        {
            try
            {
                await reactor.InvokeAsync(channel.Dispose).ConfigureAwait(false);
            }
            catch (ObjectDisposedException)
            {
            }
        }

        _channels.Clear();
        if (_ownsReactors)
        {
            _reactors?.Dispose();
        }

        _certificate?.Dispose();
        _stop.Dispose();
    }

    /// <summary>The channel to the local stores on <paramref name="reactor"/> (its thread only), opened at first use.</summary>
    internal ReplicaChannel LocalChannel(Reactor reactor)
    {
        if (!_channels.TryGetValue(reactor, out var channel))
        {
            channel = _local.Open(_options.NodeId, reactor);
            _channels[reactor] = channel;
        }

        return channel;
    }

    internal void Served(long requests) => Interlocked.Add(ref _requests, requests);

    internal void Closed(ReplicaServerConnection connection)
    {
        if (_connections.TryRemove(connection, out _))
        {
            Interlocked.Decrement(ref _open);
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

            if (Interlocked.Increment(ref _open) > _options.MaxConnections)
            {
                Interlocked.Decrement(ref _open);
                ReplicaProtocolLog.TooManyConnections(_logger, _options.MaxConnections, Peer(client));
                client.Dispose();
                continue;
            }

            client.NoDelay = true;
            _ = SetUpAsync(client);
        }
    }

    /// <summary>TLS and the handshake on the thread pool, with a deadline; then the connection goes to a reactor.</summary>
    private async Task SetUpAsync(Socket client)
    {
        string peer = Peer(client);
        Stream? stream = null;
        ReplicaTlsRelay? relay = null;
        Socket served = client;
        try
        {
            using var deadline = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
            deadline.CancelAfter(_options.HandshakeTimeout);
            stream = new NetworkStream(client, ownsSocket: true);
            if (_certificate != null)
            {
                var tls = new SslStream(stream, leaveInnerStreamOpen: false);
                stream = tls;
                await tls.AuthenticateAsServerAsync(new SslServerAuthenticationOptions { ServerCertificate = _certificate }, deadline.Token).ConfigureAwait(false);
            }

            string clientNode = await ReplicaHandshake.ServerAsync(stream, _key, _options.NodeId, deadline.Token).ConfigureAwait(false);
            if (stream is SslStream ssl)
            {
                served = ReplicaTlsRelay.Start(ssl, out relay);
            }
            else
            {
                served = ReactorSocket.Detach(client, _logger, peer);
            }

            ReplicaProtocolLog.Accepted(_logger, clientNode, peer);
            var assignment = _reactors!.Assign();
            var connection = new ReplicaServerConnection(this, served, relay, clientNode, assignment);
            _connections[connection] = 0;
            try
            {
                assignment.Reactor.Post(connection);
            }
            catch (ObjectDisposedException)
            {
                _connections.TryRemove(connection, out _);
                throw;
            }
        }
        catch (Exception e)
        {
            Interlocked.Increment(ref _refused);
            if (!_stop.IsCancellationRequested)
            {
                string reason = e is OperationCanceledException ? $"no handshake within {_options.HandshakeTimeout.TotalSeconds} s" : e.Message;
                ReplicaProtocolLog.HandshakeRefused(_logger, peer, reason);
            }

            relay?.Dispose();
            if (served != client)
            {
                served.Dispose();
            }

            stream?.Dispose();
            client.Dispose();
            Interlocked.Decrement(ref _open);
        }
    }

    private static string Peer(Socket socket)
    {
        try
        {
            return socket.RemoteEndPoint?.ToString() ?? "?";
        }
        catch (Exception e) when (e is ObjectDisposedException or SocketException)
        {
            return "?";
        }
    }
}
