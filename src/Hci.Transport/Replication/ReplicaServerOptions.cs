using System.Net;
using System.Security.Cryptography.X509Certificates;
using Hci.Core.Replication;

namespace Hci.Transport.Replication;

/// <summary>Settings of a <see cref="ReplicaServer"/>, checked when it is created.</summary>
public sealed class ReplicaServerOptions
{
    /// <summary>This node's id, as in the cluster map (clients check it in the handshake). Required.</summary>
    public string NodeId { get; set; } = "";

    /// <summary>Where to listen, <c>HOST:PORT</c> (IPv4, or <c>[v6]:PORT</c>); port 0 picks a free one.</summary>
    /// <remarks>Default <c>0.0.0.0:7420</c>.</remarks>
    public string Listen { get; set; } = "0.0.0.0:7420";

    /// <summary>The cluster key file (random bytes, mode 0600, see <see cref="ClusterKey"/>). This or <see cref="Key"/> is required.</summary>
    public string? KeyFile { get; set; }

    /// <summary>The cluster key itself (embedding, tests), instead of <see cref="KeyFile"/>.</summary>
    public byte[]? Key { get; set; }

    /// <summary>TLS: the server certificate, a PFX/PKCS#12 file or a PEM certificate (then with <see cref="TlsKeyFile"/>).
    /// Null (the default): no TLS, the cluster key still authenticates both sides.</summary>
    public string? TlsCertificateFile { get; set; }

    /// <summary>TLS: the PEM private key of <see cref="TlsCertificateFile"/>, when that is a PEM certificate.</summary>
    public string? TlsKeyFile { get; set; }

    /// <summary>TLS: the PFX file's password, if any.</summary>
    public string? TlsCertificatePassword { get; set; }

    /// <summary>Connections open at once (authenticating or not); more are closed at once.</summary>
    /// <remarks>Default 256.</remarks>
    public int MaxConnections { get; set; } = 256;

    /// <summary>Requests one connection may have in the store at once; past it the connection reads no more
    /// (backpressure through TCP) until answers go out.</summary>
    /// <remarks>Default 128.</remarks>
    public int MaxInFlightPerConnection { get; set; } = 128;

    /// <summary>Data buffer bytes one connection may hold (requests in the store); at least one
    /// <see cref="ReplicaGeometry.MaxTransfer"/>.</summary>
    /// <remarks>Default 64 MiB.</remarks>
    public long MaxBufferedBytesPerConnection { get; set; } = 64L << 20;

    /// <summary>How long a new connection has to finish TLS and the handshake before it is closed.</summary>
    /// <remarks>Default 5 s.</remarks>
    public TimeSpan HandshakeTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>How long a client may leave its answers unread (the socket full) before its connection is dropped.</summary>
    /// <remarks>Default 30 s.</remarks>
    public TimeSpan SendTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Reactors (threads) serving the connections when the server makes its own group; 0 for the group's default.</summary>
    /// <remarks>Default 0.</remarks>
    public int Reactors { get; set; }

    /// <summary>How long a connection's reactor keeps polling after work before it sleeps.</summary>
    /// <remarks>Default 32 us. On a machine with fewer cores than busy threads (several nodes on one small host), 0
    /// frees the cores for the threads that have work.</remarks>
    public TimeSpan PollWindow { get; set; } = TimeSpan.FromMicroseconds(32);

    internal IPEndPoint ValidateEndpoint()
    {
        if (string.IsNullOrWhiteSpace(NodeId) || System.Text.Encoding.UTF8.GetByteCount(NodeId) > ReplicaHandshake.MaxNodeIdBytes)
        {
            throw new ArgumentException($"ReplicaServerOptions.NodeId is required: this node's id as in the cluster map (1 to {ReplicaHandshake.MaxNodeIdBytes} bytes).");
        }

        if (!IPEndPoint.TryParse(Listen ?? "", out var endpoint) || !(Listen ?? "").Contains(':', StringComparison.Ordinal))
        {
            throw new ArgumentException($"ReplicaServerOptions.Listen '{Listen}' is not HOST:PORT with an IP address (such as 0.0.0.0:7420 or [::]:7420).");
        }

        if (PollWindow < TimeSpan.Zero || PollWindow > TimeSpan.FromSeconds(1))
        {
            throw new ArgumentException($"ReplicaServerOptions.PollWindow must be from 0 to 1 s (was {PollWindow}).");
        }

        if (KeyFile == null && Key == null)
        {
            throw new ArgumentException("ReplicaServerOptions needs the cluster key: set KeyFile (made by ClusterKey.Generate, mode 0600).");
        }

        if (Key != null && Key.Length is < ClusterKey.MinLength or > ClusterKey.MaxLength)
        {
            throw new ArgumentException($"ReplicaServerOptions.Key is {Key.Length} bytes; a cluster key is {ClusterKey.MinLength} to {ClusterKey.MaxLength}.");
        }

        if (MaxConnections < 1)
        {
            throw new ArgumentException($"ReplicaServerOptions.MaxConnections is {MaxConnections}; it must be at least 1.");
        }

        if (MaxInFlightPerConnection is < 1 or > 4096)
        {
            throw new ArgumentException($"ReplicaServerOptions.MaxInFlightPerConnection is {MaxInFlightPerConnection}; it must be 1 to 4096.");
        }

        if (MaxBufferedBytesPerConnection < ReplicaGeometry.MaxTransfer)
        {
            throw new ArgumentException($"ReplicaServerOptions.MaxBufferedBytesPerConnection is {MaxBufferedBytesPerConnection}; it must hold at least one largest transfer ({ReplicaGeometry.MaxTransfer} bytes).");
        }

        if (HandshakeTimeout <= TimeSpan.Zero || SendTimeout <= TimeSpan.Zero)
        {
            throw new ArgumentException("ReplicaServerOptions.HandshakeTimeout and SendTimeout must be positive.");
        }

        if (Reactors < 0)
        {
            throw new ArgumentException($"ReplicaServerOptions.Reactors is {Reactors}; use 0 for the default or a positive count.");
        }

        if (TlsKeyFile != null && TlsCertificateFile == null)
        {
            throw new ArgumentException("ReplicaServerOptions.TlsKeyFile is set without TlsCertificateFile.");
        }

        return endpoint;
    }

    internal byte[] LoadKey() => Key != null ? (byte[])Key.Clone() : ClusterKey.Load(KeyFile!);

    internal X509Certificate2? LoadCertificate()
    {
        if (TlsCertificateFile == null)
        {
            return null;
        }

        try
        {
            return TlsKeyFile != null
                ? X509Certificate2.CreateFromPemFile(TlsCertificateFile, TlsKeyFile)
                : X509CertificateLoader.LoadPkcs12FromFile(TlsCertificateFile, TlsCertificatePassword);
        }
        catch (Exception e) when (e is System.Security.Cryptography.CryptographicException or IOException)
        {
            throw new ArgumentException($"ReplicaServerOptions.TlsCertificateFile '{TlsCertificateFile}' cannot be loaded ({e.Message}): give a PFX file (with TlsCertificatePassword if it has one) or a PEM certificate with TlsKeyFile.", e);
        }
    }
}
