using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using Google.Protobuf;
using Grpc.Core;
using Hci.Cluster.Etcd;
using Hci.Cluster.Etcd.Protocol;
using Hci.Core.Cluster;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace Hci.Cluster;

/// <summary>
/// The cluster store on etcd v3: keys, revisions, compare-and-swap transactions, leases and watches are etcd's own,
/// reached over its gRPC API. Every call that etcd does not answer, or refuses, throws a
/// <see cref="ClusterStoreException"/> that says what to do; a failed compare is a result, not an exception.
/// </summary>
/// <remarks>
/// Control plane only: one gRPC call per operation, nothing on the I/O path. Thread-safe. Reads fail over to the
/// next endpoint when a member does not answer; transactions are never sent twice (a transaction whose answer was
/// lost may have been applied: the caller re-reads and compares again).
/// </remarks>
public sealed class EtcdClusterStore : IClusterStore
{
    private readonly EtcdConnection _connection;
    private readonly EtcdKeys _keys;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<EtcdLease, byte> _leases = new();
    private int _disposed;

    /// <summary>Creates a store; it connects on first use (<see cref="ConnectAsync"/> checks at once).</summary>
    /// <param name="options">Where etcd is; validated here.</param>
    /// <param name="loggerFactory">Where to log lease and connection trouble; none by default.</param>
    /// <exception cref="ArgumentException">The options are invalid; the message says how to fix them.</exception>
    public EtcdClusterStore(EtcdClusterStoreOptions options, ILoggerFactory? loggerFactory = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var copy = new EtcdClusterStoreOptions
        {
            Endpoints = [.. options.Endpoints],
            KeyPrefix = options.KeyPrefix,
            DialTimeout = options.DialTimeout,
            RequestTimeout = options.RequestTimeout,
            WatchReconnectTimeout = options.WatchReconnectTimeout,
        };
        _logger = (loggerFactory ?? NullLoggerFactory.Instance).CreateLogger<EtcdClusterStore>();
        _connection = new EtcdConnection(copy, _logger);
        _keys = new EtcdKeys(copy.KeyPrefix);
    }

    /// <summary>Creates a store from configured options (dependency injection).</summary>
    /// <param name="options">Where etcd is.</param>
    /// <param name="loggerFactory">Where to log.</param>
    public EtcdClusterStore(IOptions<EtcdClusterStoreOptions> options, ILoggerFactory loggerFactory)
        : this((options ?? throw new ArgumentNullException(nameof(options))).Value, loggerFactory)
    {
    }

    /// <summary>Creates a store and checks that etcd answers, so that a wrong endpoint fails at start with a clear message.</summary>
    /// <param name="options">Where etcd is.</param>
    /// <param name="loggerFactory">Where to log; none by default.</param>
    /// <param name="cancellationToken">Cancels the check.</param>
    /// <returns>The store.</returns>
    /// <exception cref="ClusterStoreException">No endpoint answered; the message says what to do.</exception>
    public static async Task<EtcdClusterStore> ConnectAsync(EtcdClusterStoreOptions options, ILoggerFactory? loggerFactory = null, CancellationToken cancellationToken = default)
    {
        var store = new EtcdClusterStore(options, loggerFactory);
        try
        {
            await store.GetAsync("hci-connect-check", cancellationToken).ConfigureAwait(false);
            return store;
        }
        catch
        {
            await store.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Keys per page of <see cref="ListAsync"/> (all pages are read at one revision).</summary>
    internal int PageSize { get; set; } = 2048;

    /// <inheritdoc/>
    public async ValueTask<StoreEntry?> GetAsync(string key, CancellationToken cancellationToken = default)
    {
        var request = new RangeRequest { Key = _keys.Key(key) };
        var response = await _connection.CallAsync($"a read of '{key}'", failOver: true,
            (index, options) => _connection.Kv(index).RangeAsync(request, options), cancellationToken).ConfigureAwait(false);
        return response.Kvs.Count == 0 ? null : Entry(response.Kvs[0]);
    }

    /// <inheritdoc/>
    public async ValueTask<StoreRange> ListAsync(string prefix, CancellationToken cancellationToken = default)
    {
        var (start, end) = _keys.Range(prefix);
        var entries = new List<StoreEntry>();
        long revision = 0;
        var key = start;
        while (true)
        {
            var request = new RangeRequest { Key = key, RangeEnd = end, Limit = PageSize, Revision = revision };
            var response = await _connection.CallAsync($"a list of '{prefix}'", failOver: true,
                (index, options) => _connection.Kv(index).RangeAsync(request, options), cancellationToken).ConfigureAwait(false);
            if (revision == 0)
            {
                revision = response.Header.Revision;
            }

            foreach (var kv in response.Kvs)
            {
                entries.Add(Entry(kv));
            }

            if (!response.More || response.Kvs.Count == 0)
            {
                return new StoreRange(entries, revision);
            }

            // The next page starts just after the last key of this one: the key with a 0 byte appended.
            var last = response.Kvs[^1].Key;
            var next = new byte[last.Length + 1];
            last.Span.CopyTo(next);
            key = UnsafeByteOperations.UnsafeWrap(next);
        }
    }

    /// <inheritdoc/>
    public async ValueTask<long?> TryCommitAsync(IReadOnlyList<StoreCondition> conditions, IReadOnlyList<StoreWrite> writes, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(conditions);
        ArgumentNullException.ThrowIfNull(writes);
        var request = new TxnRequest();
        foreach (var condition in conditions)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(condition.ModRevision);
            request.Compare.Add(new Compare
            {
                Key = _keys.Key(condition.Key),
                Target = Compare.Types.CompareTarget.Mod,
                Result = Compare.Types.CompareResult.Equal,
                ModRevision = condition.ModRevision,
            });
        }

        foreach (var write in writes)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(write.Lease);
            request.Success.Add(write.Value is { } value
                ? new RequestOp { RequestPut = new PutRequest { Key = _keys.Key(write.Key), Value = ByteString.CopyFrom(value.Span), Lease = write.Lease } }
                : new RequestOp { RequestDeleteRange = new DeleteRangeRequest { Key = _keys.Key(write.Key) } });
        }

        var response = await _connection.CallAsync($"a transaction of {writes.Count} writes", failOver: false,
            (index, options) => _connection.Kv(index).TxnAsync(request, options), cancellationToken).ConfigureAwait(false);
        return response.Succeeded ? response.Header.Revision : null;
    }

    /// <inheritdoc/>
    public async ValueTask<IStoreLease> GrantLeaseAsync(TimeSpan ttl, CancellationToken cancellationToken = default)
    {
        if (ttl < TimeSpan.FromSeconds(1) || ttl > TimeSpan.FromDays(1))
        {
            throw new ArgumentOutOfRangeException(nameof(ttl), ttl, "A lease's TTL must be from 1 s to a day (etcd counts whole seconds and raises TTLs below about 2 s to its minimum).");
        }

        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        long seconds = (long)Math.Ceiling(ttl.TotalSeconds);
        long sent = Stopwatch.GetTimestamp();
        var response = await _connection.CallAsync("a lease grant", failOver: true,
            (index, options) => _connection.Lease(index).LeaseGrantAsync(new LeaseGrantRequest { TTL = seconds }, options),
            cancellationToken).ConfigureAwait(false);
        if (!string.IsNullOrEmpty(response.Error) || response.ID == 0)
        {
            throw new ClusterStoreException($"etcd refused a lease of {seconds} s: {response.Error}");
        }

        var lease = new EtcdLease(_connection, response.ID, response.TTL, sent, _logger, l => _leases.TryRemove(l, out _));
        _leases[lease] = 0;
        lease.Start();
        return lease;
    }

    /// <inheritdoc/>
    public async IAsyncEnumerable<StoreEvent> WatchAsync(string prefix, long afterRevision, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(afterRevision);
        var (start, end) = _keys.Range(prefix);
        long seen = afterRevision;
        var watch = new EtcdWatch(_connection, _logger, prefix, start, end);
        try
        {
            while (true)
            {
                var response = await watch.NextAsync(seen, cancellationToken).ConfigureAwait(false);
                if (response.Canceled)
                {
                    throw response.CompactRevision > 0
                        ? new ClusterStoreException(
                            $"The watch of '{prefix}' cannot go on after revision {seen}: etcd compacted its history up to revision {response.CompactRevision}. Re-read with ListAsync and watch again from the revision it returns.")
                        : new ClusterStoreException($"etcd cancelled the watch of '{prefix}' ({response.CancelReason}): re-read with ListAsync and watch again.");
                }

                foreach (var change in response.Events)
                {
                    var kv = change.Kv;
                    if (kv.ModRevision <= seen)
                    {
                        // Already delivered before a resume.
                        continue;
                    }

                    seen = kv.ModRevision;
                    yield return new StoreEvent(Entry(kv), change.Type == Event.Types.EventType.Delete);
                }
            }
        }
        finally
        {
            watch.Dispose();
        }
    }

    private StoreEntry Entry(KeyValue kv) => new(_keys.Strip(kv.Key), kv.Value.Memory, kv.ModRevision, kv.Lease);

    /// <summary>Revokes the leases still held (their keys go at once) and closes the connections.</summary>
    /// <returns>A task that completes when done.</returns>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        foreach (var lease in _leases.Keys)
        {
            await lease.DisposeAsync().ConfigureAwait(false);
        }

        _connection.Dispose();
    }
}
