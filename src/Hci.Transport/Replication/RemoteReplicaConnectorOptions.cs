using System.Security.Cryptography.X509Certificates;

namespace Hci.Transport.Replication;

/// <summary>Settings of a <see cref="RemoteReplicaConnector"/>, checked when it is created.</summary>
public sealed class RemoteReplicaConnectorOptions
{
    /// <summary>This node's id, sent in the handshake. Required.</summary>
    public string NodeId { get; set; } = "";

    /// <summary>A node's address (<c>HOST:PORT</c>) by node id, asked at every connection attempt (addresses may change);
    /// null when the node is unknown. Either this or <see cref="Addresses"/> is required.</summary>
    public Func<string, string?>? Resolve { get; set; }

    /// <summary>Fixed addresses (<c>HOST:PORT</c>) by node id, looked at when <see cref="Resolve"/> is null or returns null.</summary>
    public IDictionary<string, string> Addresses { get; } = new Dictionary<string, string>(StringComparer.Ordinal);

    /// <summary>The cluster key file (mode 0600, see <see cref="ClusterKey"/>). This or <see cref="Key"/> is required.</summary>
    public string? KeyFile { get; set; }

    /// <summary>The cluster key itself (embedding, tests), instead of <see cref="KeyFile"/>.</summary>
    public byte[]? Key { get; set; }

    /// <summary>Speak TLS to the servers (which then need a certificate). Set <see cref="TlsCaCertificateFile"/> or
    /// <see cref="TlsPinnedThumbprint"/> to say which server certificates are trusted; without either the system's trust
    /// store decides.</summary>
    /// <remarks>Default false.</remarks>
    public bool Tls { get; set; }

    /// <summary>TLS: a PEM or DER CA certificate that server certificates must chain to (the cluster's own CA).</summary>
    public string? TlsCaCertificateFile { get; set; }

    /// <summary>TLS: the SHA-256 thumbprint (hex) of the one server certificate trusted, instead of a CA.</summary>
    public string? TlsPinnedThumbprint { get; set; }

    /// <summary>TLS: the name checked against the server certificate; null for the address's host.</summary>
    public string? TlsServerName { get; set; }

    /// <summary>Requests one channel sends before it waits for answers (more wait in the channel, in order).</summary>
    /// <remarks>Default 256.</remarks>
    public int MaxInFlight { get; set; } = 256;

    /// <summary>How long connecting (TCP, TLS and the handshake) may take.</summary>
    /// <remarks>Default 5 s.</remarks>
    public TimeSpan ConnectTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>How long a request may wait for its answer; then it is answered Unavailable and the connection is dropped
    /// (and made again): a node that does not answer in time is treated as gone.</summary>
    /// <remarks>Default 10 s.</remarks>
    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>The first wait before connecting again after a failure; it doubles at each failure up to
    /// <see cref="MaxReconnectDelay"/>.</summary>
    /// <remarks>Default 50 ms.</remarks>
    public TimeSpan ReconnectDelay { get; set; } = TimeSpan.FromMilliseconds(50);

    /// <summary>The longest wait between connection attempts.</summary>
    /// <remarks>Default 2 s.</remarks>
    public TimeSpan MaxReconnectDelay { get; set; } = TimeSpan.FromSeconds(2);

    internal void Validate()
    {
        if (string.IsNullOrWhiteSpace(NodeId) || System.Text.Encoding.UTF8.GetByteCount(NodeId) > ReplicaHandshake.MaxNodeIdBytes)
        {
            throw new ArgumentException($"RemoteReplicaConnectorOptions.NodeId is required: this node's id (1 to {ReplicaHandshake.MaxNodeIdBytes} bytes).");
        }

        if (Resolve == null && Addresses.Count == 0)
        {
            throw new ArgumentException("RemoteReplicaConnectorOptions needs Resolve or Addresses: how to find a node's HOST:PORT from its id.");
        }

        if (KeyFile == null && Key == null)
        {
            throw new ArgumentException("RemoteReplicaConnectorOptions needs the cluster key: set KeyFile (made by ClusterKey.Generate, mode 0600).");
        }

        if (Key != null && Key.Length is < ClusterKey.MinLength or > ClusterKey.MaxLength)
        {
            throw new ArgumentException($"RemoteReplicaConnectorOptions.Key is {Key.Length} bytes; a cluster key is {ClusterKey.MinLength} to {ClusterKey.MaxLength}.");
        }

        if (MaxInFlight is < 1 or > 65536)
        {
            throw new ArgumentException($"RemoteReplicaConnectorOptions.MaxInFlight is {MaxInFlight}; it must be 1 to 65536.");
        }

        if (ConnectTimeout <= TimeSpan.Zero || RequestTimeout <= TimeSpan.Zero || ReconnectDelay <= TimeSpan.Zero || MaxReconnectDelay < ReconnectDelay)
        {
            throw new ArgumentException("RemoteReplicaConnectorOptions: ConnectTimeout, RequestTimeout and ReconnectDelay must be positive, and MaxReconnectDelay at least ReconnectDelay.");
        }

        if (!Tls && (TlsCaCertificateFile != null || TlsPinnedThumbprint != null))
        {
            throw new ArgumentException("RemoteReplicaConnectorOptions: TlsCaCertificateFile or TlsPinnedThumbprint is set but Tls is false.");
        }
    }

    internal byte[] LoadKey() => Key != null ? (byte[])Key.Clone() : ClusterKey.Load(KeyFile!);

    internal X509Certificate2? LoadCa()
    {
        if (TlsCaCertificateFile == null)
        {
            return null;
        }

        try
        {
            return X509CertificateLoader.LoadCertificateFromFile(TlsCaCertificateFile);
        }
        catch (Exception e) when (e is System.Security.Cryptography.CryptographicException or IOException)
        {
            throw new ArgumentException($"RemoteReplicaConnectorOptions.TlsCaCertificateFile '{TlsCaCertificateFile}' cannot be loaded: {e.Message}.", e);
        }
    }

    internal string? AddressOf(string nodeId) => Resolve?.Invoke(nodeId) ?? (Addresses.TryGetValue(nodeId, out var a) ? a : null);
}
