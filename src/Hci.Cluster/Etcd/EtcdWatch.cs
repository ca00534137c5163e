using System.Diagnostics;
using Google.Protobuf;
using Grpc.Core;
using Hci.Cluster.Etcd.Protocol;
using Hci.Core.Cluster;
using Microsoft.Extensions.Logging;

namespace Hci.Cluster.Etcd;

/// <summary>
/// One watch's stream, reopened (on the next member) from the last revision delivered when it breaks, for up to
/// <see cref="EtcdClusterStoreOptions.WatchReconnectTimeout"/>.
/// </summary>
internal sealed class EtcdWatch(EtcdConnection connection, ILogger logger, string prefix, ByteString start, ByteString end) : IDisposable
{
    private AsyncDuplexStreamingCall<WatchRequest, WatchResponse>? _call;
    private int _index;

    /// <summary>The next response of the watch, resuming after <paramref name="seen"/> when the stream broke.</summary>
    public async Task<WatchResponse> NextAsync(long seen, CancellationToken cancellationToken)
    {
        long brokeAt = 0;
        while (true)
        {
            RpcException failure;
            try
            {
                if (_call is null)
                {
                    _index = connection.Current;
                    _call = connection.Watch(_index).Watch(EtcdConnection.Stream(cancellationToken));
                    await _call.RequestStream.WriteAsync(new WatchRequest
                    {
                        CreateRequest = new WatchCreateRequest { Key = start, RangeEnd = end, StartRevision = seen + 1 },
                    }, cancellationToken).ConfigureAwait(false);
                }

                if (await _call.ResponseStream.MoveNext(cancellationToken).ConfigureAwait(false))
                {
                    return _call.ResponseStream.Current;
                }

                failure = new RpcException(new Status(StatusCode.Unavailable, "etcd closed the watch stream"));
            }
            catch (RpcException e) when (!cancellationToken.IsCancellationRequested)
            {
                failure = e;
            }
            catch (RpcException) when (cancellationToken.IsCancellationRequested)
            {
                throw new OperationCanceledException(cancellationToken);
            }
            catch (Exception e) when (e is IOException or HttpRequestException && !cancellationToken.IsCancellationRequested)
            {
                // Writing to a stream whose HTTP/2 connection broke throws these rather than an RpcException.
                failure = new RpcException(new Status(StatusCode.Unavailable, e.Message, e));
            }

            Dispose();
            if (!EtcdConnection.IsUnreachable(failure.StatusCode))
            {
                throw connection.Map(failure, _index, $"the watch of '{prefix}'");
            }

            connection.Failed(_index);
            if (brokeAt == 0)
            {
                brokeAt = Stopwatch.GetTimestamp();
            }
            else if (Stopwatch.GetElapsedTime(brokeAt) > connection.Options.WatchReconnectTimeout)
            {
                var inner = connection.Map(failure, _index, $"the watch of '{prefix}'");
                throw new ClusterStoreException(
                    $"The watch of '{prefix}' broke after revision {seen} and could not resume within {EtcdConnection.Seconds(connection.Options.WatchReconnectTimeout)}: {inner.Message}",
                    failure);
            }

            EtcdLog.WatchResuming(logger, prefix, seen, failure.Status.Detail);
            await Task.Delay(TimeSpan.FromMilliseconds(100), cancellationToken).ConfigureAwait(false);
        }
    }

    public void Dispose()
    {
        _call?.Dispose();
        _call = null;
    }
}
