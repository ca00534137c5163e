using System.Runtime.CompilerServices;
using System.Threading.Channels;

namespace Hci.Core.Cluster;

/// <summary>
/// The cluster store of a single node: one file in a directory, with etcd's semantics (a global revision, a
/// modification revision per key, atomic compare-and-swap transactions, watches from a revision, leases). Every
/// commit rewrites the file with atomic replace (temporary file, fsync, rename, fsync of the directory): a crash
/// leaves the state before or after the commit, never a mix. A lock file (flock) keeps a second process out.
/// </summary>
/// <remarks>
/// <para>Leases never lapse while the process lives (nothing else could renew them); keys written with a lease are
/// dropped when the store is opened again, as etcd drops them when their time to live passes after a crash.</para>
/// <para>Watches are served from the changes made since the store was opened (the last 100,000); a watch from
/// an older revision gets a <see cref="ClusterStoreException"/> telling the caller to list and watch again.</para>
/// <para>Every commit costs one write and two fsyncs of the whole state: fine for a control plane of a few thousand
/// keys (nodes, volumes, allocated extents); see docs/cluster.md for the measured cost.</para>
/// </remarks>
public sealed class LocalClusterStore : IClusterStore
{
    private const string LockName = "cluster-store.lock";
    private const int MaxHistory = 100_000;
    private const int MaxWatcherBacklog = 100_000;
    private const int MaxKeyBytes = 4096;
    private const int MaxValueBytes = 16 << 20;

    private readonly Lock _sync = new();
    private readonly SemaphoreSlim _commitGate = new(1, 1);
    private readonly SortedDictionary<string, StoreEntry> _entries = new(StringComparer.Ordinal);
    private readonly Dictionary<long, LocalStoreLease> _leases = [];
    private readonly List<StoreEvent> _history = [];
    private readonly List<Watcher> _watchers = [];
    private readonly StoreLockFile _lock;
    private long _revision;
    private long _nextLease;
    private long _historyStart;
    private bool _disposed;
    private Exception? _failure;

    private LocalClusterStore(string directory, StoreLockFile lockFile)
    {
        Directory = directory;
        _lock = lockFile;
    }

    /// <summary>The directory that holds the store's file and lock file.</summary>
    public string Directory { get; }

    /// <summary>A test hook: runs in a commit once the temporary file is durable, before the rename.</summary>
    internal Action? BeforeReplaceForTests { get; set; }

    /// <summary>The store's current revision.</summary>
    public long Revision
    {
        get
        {
            lock (_sync)
            {
                return _revision;
            }
        }
    }

    /// <summary>
    /// Opens (or creates) the store in <paramref name="directory"/>: takes its lock, reads its file, and drops the keys
    /// of leases from before (their process is gone).
    /// </summary>
    /// <param name="directory">The directory; created when missing.</param>
    /// <returns>The store.</returns>
    /// <exception cref="ClusterStoreException">Another process holds the store (the message names its pid), or the
    /// file is unreadable or corrupt (the message says what to do).</exception>
    public static LocalClusterStore Open(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        directory = Path.GetFullPath(directory);
        try
        {
            System.IO.Directory.CreateDirectory(directory);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new ClusterStoreException($"Cannot create the cluster store directory '{directory}': {ex.Message}", ex);
        }

        var lockFile = StoreLockFile.Acquire(Path.Combine(directory, LockName), $"The cluster store in '{directory}'");
        var store = new LocalClusterStore(directory, lockFile);
        try
        {
            store.Load();
            return store;
        }
        catch
        {
            lockFile.Dispose();
            throw;
        }
    }

    /// <inheritdoc/>
    public ValueTask<StoreEntry?> GetAsync(string key, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(key);
        lock (_sync)
        {
            ThrowIfUnusable();
            return ValueTask.FromResult<StoreEntry?>(_entries.TryGetValue(key, out var entry) ? entry : null);
        }
    }

    /// <inheritdoc/>
    public ValueTask<StoreRange> ListAsync(string prefix, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(prefix);
        lock (_sync)
        {
            ThrowIfUnusable();
            var list = new List<StoreEntry>();
            foreach (var (key, entry) in _entries)
            {
                if (key.StartsWith(prefix, StringComparison.Ordinal))
                {
                    list.Add(entry);
                }
                else if (string.CompareOrdinal(key, prefix) > 0)
                {
                    break; // sorted: past the prefix's keys
                }
            }

            return ValueTask.FromResult(new StoreRange(list, _revision));
        }
    }

    /// <inheritdoc/>
    public async ValueTask<long?> TryCommitAsync(IReadOnlyList<StoreCondition> conditions, IReadOnlyList<StoreWrite> writes, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(conditions);
        ArgumentNullException.ThrowIfNull(writes);
        foreach (var write in writes)
        {
            CheckWrite(write);
        }

        await _commitGate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            lock (_sync)
            {
                ThrowIfUnusable();
                foreach (var condition in conditions)
                {
                    long actual = _entries.TryGetValue(condition.Key, out var entry) ? entry.ModRevision : 0;
                    if (actual != condition.ModRevision)
                    {
                        return null;
                    }
                }

                foreach (var write in writes)
                {
                    if (write.Value is not null && write.Lease != 0 && !_leases.ContainsKey(write.Lease))
                    {
                        throw new ClusterStoreException($"Lease {write.Lease} (for key '{write.Key}') was not found: it was revoked, or granted before the store was reopened. Grant a new lease.");
                    }
                }
            }

            return Apply(writes);
        }
        finally
        {
            _commitGate.Release();
        }
    }

    /// <inheritdoc/>
    public ValueTask<IStoreLease> GrantLeaseAsync(TimeSpan ttl, CancellationToken cancellationToken = default)
    {
        if (ttl <= TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(ttl), ttl, "A lease's time to live must be positive.");
        }

        lock (_sync)
        {
            ThrowIfUnusable();
            var lease = new LocalStoreLease(this, _nextLease++);
            _leases.Add(lease.Id, lease);
            return ValueTask.FromResult<IStoreLease>(lease);
        }
    }

    /// <inheritdoc/>
    public async IAsyncEnumerable<StoreEvent> WatchAsync(string prefix, long afterRevision, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(prefix);
        var watcher = new Watcher(prefix);
        lock (_sync)
        {
            ThrowIfUnusable();
            if (afterRevision < _historyStart)
            {
                throw new ClusterStoreException($"Changes after revision {afterRevision} are no longer kept (the local store keeps those since revision {_historyStart}): read again with ListAsync and watch from its revision.");
            }

            foreach (var change in _history)
            {
                if (change.Entry.ModRevision > afterRevision && watcher.Matches(change.Entry.Key))
                {
                    watcher.Channel.Writer.TryWrite(change);
                }
            }

            _watchers.Add(watcher);
        }

        try
        {
            while (await watcher.Channel.Reader.WaitToReadAsync(cancellationToken).ConfigureAwait(false))
            {
                while (watcher.Channel.Reader.TryRead(out var change))
                {
                    yield return change;
                }
            }
        }
        finally
        {
            lock (_sync)
            {
                _watchers.Remove(watcher);
            }
        }
    }

    /// <summary>Closes the store: watches end with a <see cref="ClusterStoreException"/>, leases are lost (their keys
    /// go when the store is opened again), and the lock is released.</summary>
    /// <returns>A task that completes when the store is closed.</returns>
    public async ValueTask DisposeAsync()
    {
        await _commitGate.WaitAsync().ConfigureAwait(false);
        try
        {
            LocalStoreLease[] leases;
            lock (_sync)
            {
                if (_disposed)
                {
                    return;
                }

                _disposed = true;
                leases = [.. _leases.Values];
                _leases.Clear();
                foreach (var watcher in _watchers)
                {
                    watcher.Channel.Writer.TryComplete(new ClusterStoreException($"The cluster store in '{Directory}' was closed."));
                }

                _watchers.Clear();
            }

            foreach (var lease in leases)
            {
                lease.MarkLost();
            }

            _lock.Dispose();
        }
        finally
        {
            _commitGate.Release();
        }
    }

    internal async ValueTask RevokeAsync(LocalStoreLease lease)
    {
        await _commitGate.WaitAsync().ConfigureAwait(false);
        try
        {
            List<StoreWrite> deletes;
            lock (_sync)
            {
                if (_disposed || !_leases.Remove(lease.Id))
                {
                    return;
                }

                deletes = _entries.Values.Where(e => e.Lease == lease.Id).Select(e => StoreWrite.Delete(e.Key)).ToList();
            }

            Apply(deletes);
        }
        finally
        {
            _commitGate.Release();
        }
    }

    private static void CheckWrite(StoreWrite write)
    {
        if (string.IsNullOrEmpty(write.Key) || System.Text.Encoding.UTF8.GetByteCount(write.Key) > MaxKeyBytes)
        {
            throw new ArgumentException($"A key must have 1 to {MaxKeyBytes} bytes ('{write.Key}').", nameof(write));
        }

        if (write.Value is { Length: > MaxValueBytes })
        {
            throw new ArgumentException($"The value of '{write.Key}' has {write.Value.Value.Length} bytes; a value holds {MaxValueBytes} at most.", nameof(write));
        }
    }

    /// <summary>Applies writes whose conditions held (the commit gate is held): the file first, then memory, then
    /// the watchers.</summary>
    private long Apply(IReadOnlyList<StoreWrite> writes)
    {
        SortedDictionary<string, StoreEntry> next;
        var changes = new List<StoreEvent>(writes.Count);
        long revision;
        long nextLease;
        lock (_sync)
        {
            ThrowIfUnusable();
            revision = _revision + 1;
            nextLease = _nextLease;
            next = new SortedDictionary<string, StoreEntry>(_entries, StringComparer.Ordinal);
        }

        foreach (var write in writes)
        {
            if (write.Value is { } value)
            {
                var entry = new StoreEntry(write.Key, value.ToArray(), revision, write.Lease);
                next[write.Key] = entry;
                changes.Add(new StoreEvent(entry, Deleted: false));
            }
            else if (next.Remove(write.Key))
            {
                changes.Add(new StoreEvent(new StoreEntry(write.Key, ReadOnlyMemory<byte>.Empty, revision), Deleted: true));
            }
        }

        if (changes.Count == 0)
        {
            lock (_sync)
            {
                return _revision;
            }
        }

        Persist(revision, nextLease, next.Values);
        lock (_sync)
        {
            _entries.Clear();
            foreach (var (key, entry) in next)
            {
                _entries.Add(key, entry);
            }

            _revision = revision;
            Publish(changes);
        }

        return revision;
    }

    private void Persist(long revision, long nextLease, IReadOnlyCollection<StoreEntry> entries)
    {
        try
        {
            LocalStoreFile.Replace(Directory, LocalStoreFile.Serialize(revision, nextLease, entries), BeforeReplaceForTests);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // Where the write failed decides what is on disk (old or new); memory can no longer tell. Refuse all further
            // requests: reopening reads whichever state the disk holds.
            lock (_sync)
            {
                _failure = ex;
            }

            throw new ClusterStoreException($"Cannot write the cluster store in '{Directory}': {ex.Message} The store refuses further requests: free space or fix permissions, then restart the process (the file holds the state before or after this commit).", ex);
        }
    }

    /// <summary>Records changes in the history and hands them to the watchers (under <see cref="_sync"/>).</summary>
    private void Publish(List<StoreEvent> changes)
    {
        _history.AddRange(changes);
        if (_history.Count > MaxHistory)
        {
            int drop = _history.Count - MaxHistory;
            long dropped = _history[drop - 1].Entry.ModRevision;
            while (drop < _history.Count && _history[drop].Entry.ModRevision == dropped)
            {
                drop++; // a revision's changes stay together
            }

            _history.RemoveRange(0, drop);
            _historyStart = dropped;
        }

        for (int i = _watchers.Count - 1; i >= 0; i--)
        {
            var watcher = _watchers[i];
            foreach (var change in changes)
            {
                if (watcher.Matches(change.Entry.Key))
                {
                    watcher.Channel.Writer.TryWrite(change);
                }
            }

            if (watcher.Channel.Reader.Count > MaxWatcherBacklog)
            {
                watcher.Channel.Writer.TryComplete(new ClusterStoreException($"A watch of '{watcher.Prefix}' fell more than {MaxWatcherBacklog} changes behind: read again with ListAsync and watch from its revision."));
                _watchers.RemoveAt(i);
            }
        }
    }

    private void Load()
    {
        string path = Path.Combine(Directory, LocalStoreFile.FileName);
        File.Delete(Path.Combine(Directory, LocalStoreFile.TempName)); // a commit that crashed before its rename
        LocalStoreFile.Contents contents;
        if (File.Exists(path))
        {
            byte[] data;
            try
            {
                data = File.ReadAllBytes(path);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                throw new ClusterStoreException($"Cannot read the cluster store '{path}': {ex.Message} Check the file's permissions and the disk.", ex);
            }

            try
            {
                contents = LocalStoreFile.Parse(data);
            }
            catch (InvalidDataException ex)
            {
                throw new ClusterStoreException($"The cluster store '{path}' is corrupt: {ex.Message}. Hci replaces it atomically, so this is damage from outside (the disk, an edit). Restore it from a backup; or, to start an empty cluster (every volume record is lost, the data on the devices is not), move it away.", ex);
            }
        }
        else
        {
            contents = new LocalStoreFile.Contents(1, 1, []);
        }

        _revision = contents.Revision;
        _nextLease = contents.NextLease;
        bool dropped = false;
        foreach (var entry in contents.Entries)
        {
            if (entry.Lease != 0)
            {
                dropped = true; // its lease belonged to a process that is gone
                continue;
            }

            _entries.Add(entry.Key, entry);
        }

        if (dropped)
        {
            _revision++;
            Persist(_revision, _nextLease, _entries.Values);
        }

        _historyStart = _revision;
    }

    private void ThrowIfUnusable()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_failure is not null)
        {
            throw new ClusterStoreException($"The cluster store in '{Directory}' failed to write earlier ({_failure.Message}) and refuses requests: restart the process.", _failure);
        }
    }

    private sealed class Watcher(string prefix)
    {
        public string Prefix { get; } = prefix;

        public Channel<StoreEvent> Channel { get; } = System.Threading.Channels.Channel.CreateUnbounded<StoreEvent>(); // not single-reader: that one cannot count its backlog

        public bool Matches(string key) => key.StartsWith(Prefix, StringComparison.Ordinal);
    }
}
