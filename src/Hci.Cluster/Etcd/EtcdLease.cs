using System.Diagnostics;
using Grpc.Core;
using Hci.Cluster.Etcd.Protocol;
using Hci.Core.Cluster;
using Microsoft.Extensions.Logging;

namespace Hci.Cluster.Etcd;

/// <summary>
/// A lease kept alive by a background loop: a keepalive every third of the TTL on a LeaseKeepAlive stream, a new
/// stream (on the next member) when one breaks, and <see cref="Lost"/> when no keepalive was acknowledged for a whole
/// TTL (the lease may have lapsed on the server: its owner must stop acting) or etcd answers that the lease is gone.
/// </summary>
internal sealed class EtcdLease : IStoreLease
{
    private readonly EtcdConnection _connection;
    private readonly ILogger _logger;
    private readonly Action<EtcdLease> _removed;
    private readonly TaskCompletionSource _lost = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly CancellationTokenSource _stop = new();
    private readonly long _ttlSeconds;
    private long _lastAcknowledged;
    private Task _loop = Task.CompletedTask;
    private Task _watchdog = Task.CompletedTask;
    private int _disposed;

    public EtcdLease(EtcdConnection connection, long id, long ttlSeconds, long grantedAt, ILogger logger, Action<EtcdLease> removed)
    {
        _connection = connection;
        Id = id;
        _ttlSeconds = ttlSeconds;
        _lastAcknowledged = grantedAt;
        _logger = logger;
        _removed = removed;
    }

    /// <inheritdoc/>
    public long Id { get; }

    /// <inheritdoc/>
    public Task Lost => _lost.Task;

    /// <summary>The TTL etcd granted, in seconds.</summary>
    public long TtlSeconds => _ttlSeconds;

    private TimeSpan Ttl => TimeSpan.FromSeconds(_ttlSeconds);

    /// <summary>How long the lease is certainly alive on the server: a TTL from the send of the last acknowledged keepalive.</summary>
    private TimeSpan Remaining => Ttl - Stopwatch.GetElapsedTime(Volatile.Read(ref _lastAcknowledged));

    public void Start()
    {
        using (ExecutionContext.SuppressFlow())
        {
            _loop = Task.Run(RunAsync);
            _watchdog = Task.Run(WatchAsync);
        }
    }

    // The lease counts as lost a margin before etcd can let it lapse, whatever the keepalive loop is waiting on (a
    // connect to a member that does not answer is not bounded by the lease's time left): etcd expires it no earlier
    // than TTL after it received the last keepalive it acknowledged, which is after that keepalive was sent.
    private async Task WatchAsync()
    {
        var token = _stop.Token;
        try
        {
            while (!_lost.Task.IsCompleted)
            {
                var left = Remaining - SafetyMargin;
                if (left <= TimeSpan.Zero)
                {
                    Lose($"no keepalive was acknowledged for its TTL of {_ttlSeconds} s, less a margin of {SafetyMargin.TotalMilliseconds:0} ms before etcd may let it lapse");
                    return;
                }

                await Task.Delay(left, token).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    private TimeSpan SafetyMargin => Min(TimeSpan.FromSeconds(1), Ttl / 4);

    private async Task RunAsync()
    {
        var interval = Ttl / 3;
        var token = _stop.Token;
        var pause = TimeSpan.FromMilliseconds(50);
        while (!token.IsCancellationRequested && !_lost.Task.IsCompleted)
        {
            int index = _connection.Current;
            string reason;
            try
            {
                using var call = _connection.Lease(index).LeaseKeepAlive(EtcdConnection.Stream(token));
                while (true)
                {
                    long sent = Stopwatch.GetTimestamp();
                    await call.RequestStream.WriteAsync(new LeaseKeepAliveRequest { ID = Id }, token).ConfigureAwait(false);
                    using var wait = CancellationTokenSource.CreateLinkedTokenSource(token);
                    wait.CancelAfter(Max(Min(_connection.Options.RequestTimeout, Remaining), TimeSpan.Zero));
                    if (!await call.ResponseStream.MoveNext(wait.Token).ConfigureAwait(false))
                    {
                        throw new RpcException(new Status(StatusCode.Unavailable, "the keepalive stream ended"));
                    }

                    if (call.ResponseStream.Current.TTL <= 0)
                    {
                        Lose("etcd says it expired or was revoked");
                        return;
                    }

                    Volatile.Write(ref _lastAcknowledged, sent);
                    pause = TimeSpan.FromMilliseconds(50);
                    await Task.Delay(interval, token).ConfigureAwait(false);
                }
            }
            catch (Exception) when (token.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e)
            {
                // Whatever broke the stream (an RpcException, or an IOException from the HTTP/2 connection while
                // writing), the loop goes on until the lease is certainly lost: a faulted loop would stop keepalives.
                reason = e switch
                {
                    OperationCanceledException or RpcException { StatusCode: StatusCode.Cancelled } => $"etcd at {_connection.Describe(index)} did not answer a keepalive in time",
                    RpcException r => $"etcd at {_connection.Describe(index)}: {r.StatusCode} ({r.Status.Detail})",
                    _ => $"etcd at {_connection.Describe(index)}: {e.Message}",
                };
            }

            _connection.Failed(index);
            var remaining = Remaining;
            if (remaining <= TimeSpan.Zero)
            {
                Lose($"no keepalive was acknowledged for its whole TTL of {_ttlSeconds} s (last failure: {reason})");
                return;
            }

            EtcdLog.KeepAliveFailed(_logger, Id, (long)remaining.TotalMilliseconds, reason);
            try
            {
                await Task.Delay(Min(pause, remaining), token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }

            pause = Min(pause * 2, TimeSpan.FromSeconds(1));
        }
    }

    private void Lose(string reason)
    {
        if (_lost.TrySetResult())
        {
            EtcdLog.LeaseLost(_logger, Id, reason);
        }
    }

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;

    private static TimeSpan Max(TimeSpan a, TimeSpan b) => a > b ? a : b;

    /// <summary>Stops the keepalives and revokes the lease (its keys go at once); when etcd cannot be reached, the
    /// lease lapses by itself within its TTL.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await _stop.CancelAsync().ConfigureAwait(false);
        await _loop.ConfigureAwait(false);
        await _watchdog.ConfigureAwait(false);
        _stop.Dispose();
        try
        {
            await _connection.CallAsync("a lease revoke", failOver: true,
                (index, options) => _connection.Lease(index).LeaseRevokeAsync(new LeaseRevokeRequest { ID = Id }, options),
                CancellationToken.None).ConfigureAwait(false);
        }
        catch (ClusterStoreException e) when (e.InnerException is RpcException { StatusCode: StatusCode.NotFound })
        {
            // Already gone (it lapsed or someone revoked it).
        }
        catch (ClusterStoreException e)
        {
            EtcdLog.RevokeFailed(_logger, Id, _ttlSeconds, e.Message);
        }
        catch (ObjectDisposedException)
        {
            // The store is being disposed under us: the lease lapses by itself.
        }
        finally
        {
            _lost.TrySetResult();
            _removed(this);
        }
    }
}
