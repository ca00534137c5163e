using System.Text;

namespace Hci.Cluster;

/// <summary>How <see cref="EtcdClusterStore"/> reaches etcd.</summary>
public sealed class EtcdClusterStoreOptions
{
    /// <summary>
    /// The client URLs of the etcd members, such as <c>http://127.0.0.1:2379</c> (<c>https://</c> for TLS). Reads
    /// fail over to the next member when one does not answer; writes go to one member at a time (a write whose answer
    /// was lost is not sent twice: its caller re-reads and decides). <remarks>Default: none; at least one is required.</remarks>
    /// </summary>
    public IList<string> Endpoints { get; set; } = [];

    /// <summary>
    /// Prepended to every key, so that several clusters (or tests) can share one etcd; keys read back come without
    /// it. <remarks>Default: empty.</remarks>
    /// </summary>
    public string KeyPrefix { get; set; } = "";

    /// <summary>How long to wait for a TCP (and TLS) connection to a member. <remarks>Default: 5 s.</remarks></summary>
    public TimeSpan DialTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>How long one request (a read, a transaction, a lease call) may take. <remarks>Default: 5 s.</remarks></summary>
    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// How long a watch whose connection broke keeps trying to resume (on any member) before it fails with a
    /// <see cref="Hci.Core.Cluster.ClusterStoreException"/>; long enough to ride over an etcd restart.
    /// <remarks>Default: 30 s.</remarks>
    /// </summary>
    public TimeSpan WatchReconnectTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Checks the options and says what to fix.</summary>
    /// <exception cref="ArgumentException">The options are inconsistent; the message says which and how to fix them.</exception>
    public void Validate()
    {
        if (Endpoints is null || Endpoints.Count == 0)
        {
            throw new ArgumentException("Endpoints is empty: give at least one etcd client URL, such as http://127.0.0.1:2379.");
        }

        foreach (var endpoint in Endpoints)
        {
            if (!Uri.TryCreate(endpoint, UriKind.Absolute, out var uri) || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps)
                || uri.AbsolutePath != "/" || uri.Query.Length != 0)
            {
                throw new ArgumentException(
                    $"Endpoint '{endpoint}' is not an etcd client URL: write it as http://HOST:PORT or https://HOST:PORT (etcd's default is http://127.0.0.1:2379).");
            }
        }

        if (KeyPrefix is null)
        {
            throw new ArgumentException("KeyPrefix is null: use an empty string for no prefix.");
        }

        if (KeyPrefix.Contains('\0', StringComparison.Ordinal) || Encoding.UTF8.GetByteCount(KeyPrefix) > 1024)
        {
            throw new ArgumentException("KeyPrefix must be at most 1024 bytes of UTF-8 without NUL characters, such as 'hci-prod/'.");
        }

        Check(DialTimeout, nameof(DialTimeout));
        Check(RequestTimeout, nameof(RequestTimeout));
        Check(WatchReconnectTimeout, nameof(WatchReconnectTimeout));

        static void Check(TimeSpan value, string name)
        {
            if (value <= TimeSpan.Zero || value > TimeSpan.FromHours(1))
            {
                throw new ArgumentException($"{name} must be positive and at most an hour (was {value}).");
            }
        }
    }
}
