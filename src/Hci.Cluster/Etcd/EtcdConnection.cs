using System.Globalization;
using Grpc.Core;
using Grpc.Net.Client;
using Hci.Cluster.Etcd.Protocol;
using Hci.Core.Cluster;
using Microsoft.Extensions.Logging;

namespace Hci.Cluster.Etcd;

/// <summary>
/// The gRPC channels to etcd's members (one per endpoint, made on first use), which one is current, and how a
/// failed call becomes a <see cref="ClusterStoreException"/> that says what to do.
/// </summary>
internal sealed class EtcdConnection : IDisposable
{
    private readonly EtcdClusterStoreOptions _options;
    private readonly Uri[] _endpoints;
    private readonly GrpcChannel?[] _channels;
    private readonly Lock _gate = new();
    private readonly ILogger _logger;
    private int _current;
    private bool _disposed;

    public EtcdConnection(EtcdClusterStoreOptions options, ILogger logger)
    {
        _options = options;
        _logger = logger;
        _endpoints = [.. options.Endpoints.Select(e => new Uri(e, UriKind.Absolute))];
        _channels = new GrpcChannel?[_endpoints.Length];
    }

    public EtcdClusterStoreOptions Options => _options;

    public int EndpointCount => _endpoints.Length;

    /// <summary>The member calls go to now.</summary>
    public int Current => Volatile.Read(ref _current);

    public Uri Endpoint(int index) => _endpoints[index];

    public string Describe(int index) => _endpoints[index].GetLeftPart(UriPartial.Authority);

    public KV.KVClient Kv(int index) => new(Channel(index));

    public Lease.LeaseClient Lease(int index) => new(Channel(index));

    public Protocol.Watch.WatchClient Watch(int index) => new(Channel(index));

    /// <summary>Options for a unary call: the request deadline and the caller's token.</summary>
    public CallOptions Unary(CancellationToken cancellationToken) =>
        new(deadline: DateTime.UtcNow + _options.RequestTimeout, cancellationToken: cancellationToken);

    /// <summary>Options for a stream, which lives until cancelled.</summary>
    public static CallOptions Stream(CancellationToken cancellationToken) => new(cancellationToken: cancellationToken);

    /// <summary>The member at <paramref name="index"/> failed: later calls go to the next one.</summary>
    public void Failed(int index)
    {
        if (_endpoints.Length > 1 && Interlocked.CompareExchange(ref _current, (index + 1) % _endpoints.Length, index) == index)
        {
            EtcdLog.SwitchedEndpoint(_logger, Describe(index), Describe((index + 1) % _endpoints.Length));
        }
    }

    /// <summary>
    /// Runs a unary call on the current member; when <paramref name="failOver"/>, a member that cannot be reached is
    /// skipped for the next one (reads: safe to repeat).
    /// </summary>
    public async Task<T> CallAsync<T>(string what, bool failOver, Func<int, CallOptions, AsyncUnaryCall<T>> call, CancellationToken cancellationToken)
    {
        int attempts = failOver ? _endpoints.Length : 1;
        ClusterStoreException? last = null;

        // A call that could not even connect was never sent, so it is safe to repeat (transactions included): after
        // etcd restarts, gRPC's channel stays in its connect backoff for about a second, and failing every call in
        // that window would fail callers for nothing. Such calls are tried again for a while on the same member.
        var retryUntil = DateTime.UtcNow + (_options.RequestTimeout < NotSentRetry ? _options.RequestTimeout : NotSentRetry);
        var delay = TimeSpan.FromMilliseconds(50);
        for (int attempt = 0; attempt < attempts; attempt++)
        {
            int index = Current;
            try
            {
                using var pending = call(index, Unary(cancellationToken));
                return await pending.ResponseAsync.ConfigureAwait(false);
            }
            catch (RpcException e) when (!cancellationToken.IsCancellationRequested && IsNotSent(e) && DateTime.UtcNow + delay < retryUntil)
            {
                last = Map(e, index, what);
                await Task.Delay(delay, cancellationToken).ConfigureAwait(false);
                delay = delay * 2 > MaxNotSentDelay ? MaxNotSentDelay : delay * 2;
                attempt--;
            }
            catch (RpcException e) when (!cancellationToken.IsCancellationRequested)
            {
                last = Map(e, index, what);
                if (!IsUnreachable(e.StatusCode))
                {
                    throw last;
                }

                Failed(index);
            }
            catch (RpcException e) when (e.StatusCode == StatusCode.Cancelled)
            {
                throw new OperationCanceledException(cancellationToken);
            }
            catch (Exception e) when (e is IOException or HttpRequestException && !cancellationToken.IsCancellationRequested)
            {
                last = Map(new RpcException(new Status(StatusCode.Unavailable, e.Message, e)), index, what);
                Failed(index);
            }
        }

        throw last!;
    }

    private static readonly TimeSpan NotSentRetry = TimeSpan.FromSeconds(3);
    private static readonly TimeSpan MaxNotSentDelay = TimeSpan.FromMilliseconds(400);

    /// <summary>True when the call failed to connect, so it never reached etcd.</summary>
    private static bool IsNotSent(RpcException e)
        => e.StatusCode == StatusCode.Unavailable
            && (e.Status.DebugException is System.Net.Sockets.SocketException
                || e.Status.Detail.Contains("Error connecting to subchannel", StringComparison.Ordinal));

    /// <summary>True when the member did not answer (as opposed to answering with an error).</summary>
    public static bool IsUnreachable(StatusCode code) => code is StatusCode.Unavailable or StatusCode.DeadlineExceeded;

    /// <summary>Turns a failed call into an exception that says what failed and what to do.</summary>
    public ClusterStoreException Map(RpcException e, int index, string what)
    {
        string at = Describe(index);
        string detail = e.Status.Detail;
        string message = e.StatusCode switch
        {
            StatusCode.DeadlineExceeded =>
                $"etcd at {at} did not answer {what} within {Seconds(_options.RequestTimeout)}: is it running and reachable? "
                + StartHint(index),
            StatusCode.Unavailable =>
                $"etcd at {at} could not be reached for {what} ({detail}): is it running? " + StartHint(index),
            StatusCode.Unauthenticated or StatusCode.PermissionDenied =>
                $"etcd at {at} refused {what} ({detail}): this client does not authenticate; give it an etcd without auth, or a user with read-write access to the key prefix '{_options.KeyPrefix}'.",
            StatusCode.ResourceExhausted when detail.Contains("space", StringComparison.OrdinalIgnoreCase) =>
                $"etcd at {at} refused {what}: its database is full ({detail}). Compact and defragment it (etcdctl compact REVISION; etcdctl defrag; etcdctl alarm disarm) or raise its --quota-backend-bytes.",
            StatusCode.OutOfRange when detail.Contains("compacted", StringComparison.OrdinalIgnoreCase) =>
                $"etcd at {at} refused {what}: the revision asked for was compacted ({detail}). Re-read with ListAsync and go on from the revision it returns.",
            StatusCode.InvalidArgument =>
                $"etcd at {at} refused {what} as invalid ({detail}): a transaction may not write one key twice, nor hold more operations than etcd's --max-txn-ops (128 by default), and a value may not exceed --max-request-bytes (1.5 MiB by default).",
            _ => $"etcd at {at} failed {what}: {e.StatusCode} ({detail}).",
        };
        return new ClusterStoreException(message, e);
    }

    private string StartHint(int index)
    {
        string url = _endpoints[index].GetLeftPart(UriPartial.Authority);
        return $"Start one with `etcd --data-dir DIR --listen-client-urls {url} --advertise-client-urls {url}` (Debian: apt-get install etcd-server), or fix EtcdClusterStoreOptions.Endpoints.";
    }

    public static string Seconds(TimeSpan value) => string.Create(CultureInfo.InvariantCulture, $"{value.TotalSeconds:0.###} s");

    private GrpcChannel Channel(int index)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return _channels[index] ??= GrpcChannel.ForAddress(_endpoints[index], new GrpcChannelOptions
            {
                HttpHandler = new SocketsHttpHandler
                {
                    ConnectTimeout = _options.DialTimeout,
                    // A member that dies without closing the connection (power loss, partition) is noticed by HTTP/2
                    // pings on connections with calls in flight (watches, keepalives); etcd refuses pings more often
                    // than every 5 s (grpc-keepalive-min-time), so 10 s.
                    KeepAlivePingDelay = TimeSpan.FromSeconds(10),
                    KeepAlivePingTimeout = _options.RequestTimeout,
                    KeepAlivePingPolicy = HttpKeepAlivePingPolicy.WithActiveRequests,
                    EnableMultipleHttp2Connections = true,
                    PooledConnectionIdleTimeout = Timeout.InfiniteTimeSpan,
                },
                DisposeHttpClient = true,
                // A page of ListAsync is bounded by key count, not bytes; etcd's own limit on a request is 1.5 MiB.
                MaxReceiveMessageSize = 64 << 20,
            });
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            foreach (var channel in _channels)
            {
                channel?.Dispose();
            }
        }
    }
}
