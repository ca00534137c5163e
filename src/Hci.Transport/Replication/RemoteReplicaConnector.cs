using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Hci.Core.Reactors;
using Hci.Core.Replication;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Hci.Transport.Replication;

/// <summary>
/// The owner side of the node-to-node protocol: opens <see cref="ReplicaChannel"/>s to other nodes' replica stores
/// over TCP, authenticated on the cluster key (and optionally TLS). Each <see cref="Open"/> makes one channel for the
/// calling thread: one connection, many requests in flight, answered in any order.
/// </summary>
/// <remarks>
/// A channel opened on a reactor watches its socket there (answers are delivered on the reactor's turn) and is polled
/// by it; opened with no reactor, its owner calls <see cref="ReplicaChannel.Poll"/>. It connects and authenticates on
/// the thread pool (the owner thread never blocks), answers <see cref="ReplicaStatus.Unavailable"/> while it is not
/// connected, reconnects with a growing delay, and answers a request that outlived
/// <see cref="RemoteReplicaConnectorOptions.RequestTimeout"/> with <see cref="ReplicaStatus.Unavailable"/>, dropping the
/// connection. A read whose payload fails its checksums is answered <see cref="ReplicaStatus.BadPayload"/>.
/// </remarks>
public sealed class RemoteReplicaConnector : IReplicaConnector, IDisposable
{
    private readonly RemoteReplicaConnectorOptions _options;
    private readonly ILogger _logger;
    private readonly byte[] _key;
    private readonly X509Certificate2? _ca;

    /// <summary>Creates the connector.</summary>
    /// <param name="options">Settings, checked here (the key file's mode, the CA certificate).</param>
    /// <param name="logger">Where to log; none by default.</param>
    /// <exception cref="ArgumentException">The options are invalid.</exception>
    /// <exception cref="UnauthorizedAccessException">The key file may be read by others (see <see cref="ClusterKey.Load"/>).</exception>
    public RemoteReplicaConnector(RemoteReplicaConnectorOptions options, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _options = options;
        _logger = logger ?? NullLogger.Instance;
        _key = options.LoadKey();
        _ca = options.LoadCa();
    }

    internal RemoteReplicaConnectorOptions Options => _options;

    internal ILogger Logger => _logger;

    /// <summary>Opens a channel to <paramref name="nodeId"/> for the calling thread; it connects in the background.</summary>
    /// <param name="nodeId">The node.</param>
    /// <param name="reactor">The reactor whose thread owns the channel (call this on it), or null for a thread that polls.</param>
    /// <returns>The channel.</returns>
    public ReplicaChannel Open(string nodeId, Reactor? reactor)
    {
        ArgumentException.ThrowIfNullOrEmpty(nodeId);
        return new RemoteReplicaChannel(this, nodeId, reactor);
    }

    /// <summary>Releases the CA certificate (channels close on their own).</summary>
    public void Dispose() => _ca?.Dispose();

    /// <summary>TCP, TLS and the handshake, on the thread pool; the socket the owner thread serves, and the TLS relay if any.</summary>
    internal async Task<(Socket Socket, ReplicaTlsRelay? Relay, string Address)> ConnectAsync(string nodeId)
    {
        string address = _options.AddressOf(nodeId) ?? throw new IOException($"node {nodeId} has no known address");
        int colon = address.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(address.AsSpan(colon + 1), out int port) || port is < 1 or > 65535)
        {
            throw new IOException($"node {nodeId}'s address '{address}' is not HOST:PORT");
        }

        string host = address[..colon].Trim('[', ']');
        using var deadline = new CancellationTokenSource(_options.ConnectTimeout);
        // Closed abortively (SO_LINGER 0: a reset, the send queue dropped): a channel closes only when it has given up
        // on the connection and answered its requests Unavailable, and a graceful close would leave the kernel
        // retransmitting those writes. After a partition heals they would land on the replica late, after the owner
        // marked it out of sync and a resync had copied their regions, and turn it stale while it is called in sync.
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true, LingerState = new LingerOption(true, 0) };
        Stream? stream = null;
        try
        {
            await socket.ConnectAsync(host, port, deadline.Token).ConfigureAwait(false);
            stream = new NetworkStream(socket, ownsSocket: true);
            if (_options.Tls)
            {
                var tls = new SslStream(stream, leaveInnerStreamOpen: false, ValidateServer);
                stream = tls;
                await tls.AuthenticateAsClientAsync(new SslClientAuthenticationOptions { TargetHost = _options.TlsServerName ?? host }, deadline.Token).ConfigureAwait(false);
            }

            await ReplicaHandshake.ClientAsync(stream, _key, _options.NodeId, nodeId, deadline.Token).ConfigureAwait(false);
            if (stream is SslStream ssl)
            {
                var served = ReplicaTlsRelay.Start(ssl, out var relay);
                return (served, relay, address);
            }

            return (ReactorSocket.Detach(socket, _logger, address), null, address);
        }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested)
        {
            stream?.Dispose();
            socket.Dispose();
            throw new TimeoutException($"no connection to {address} within {_options.ConnectTimeout.TotalSeconds} s");
        }
        catch
        {
            stream?.Dispose();
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Connects for <paramref name="channel"/> and hands it the result, whatever it is.</summary>
    internal async Task ConnectForAsync(RemoteReplicaChannel channel, string nodeId)
    {
        try
        {
            var (socket, relay, address) = await ConnectAsync(nodeId).ConfigureAwait(false);
            channel.Connected(socket, relay, address, null);
        }
        catch (Exception e)
        {
            channel.Connected(null, null, null, Describe(e));
        }
    }

    private bool ValidateServer(object sender, X509Certificate? certificate, X509Chain? chain, SslPolicyErrors errors)
    {
        if (certificate == null)
        {
            return false;
        }

        if (_options.TlsPinnedThumbprint is { } pinned)
        {
            using var cert = X509CertificateLoader.LoadCertificate(certificate.GetRawCertData());
            byte[] expected;
            try
            {
                expected = Convert.FromHexString(pinned.Replace(":", "", StringComparison.Ordinal));
            }
            catch (FormatException)
            {
                return false;
            }

            return CryptographicOperations.FixedTimeEquals(cert.GetCertHash(HashAlgorithmName.SHA256), expected);
        }

        if (_ca != null)
        {
            if ((errors & ~SslPolicyErrors.RemoteCertificateChainErrors) != 0)
            {
                return false; // the name must still match
            }

            using var custom = new X509Chain();
            custom.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
            custom.ChainPolicy.CustomTrustStore.Add(_ca);
            custom.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
            using var cert = X509CertificateLoader.LoadCertificate(certificate.GetRawCertData());
            return custom.Build(cert);
        }

        return errors == SslPolicyErrors.None;
    }

    internal static string Describe(Exception e) => e switch
    {
        AggregateException { InnerException: { } inner } => Describe(inner),
        AuthenticationException => $"authentication failed: {e.Message}",
        _ => e.Message,
    };
}
