using System.Globalization;
using System.Runtime.CompilerServices;
using System.Threading.Channels;

namespace Hci.Core.Cluster;

/// <summary>
/// The cluster store of a single node: one file in a directory, with etcd's semantics (a global revision, a
/// modification revision per key, atomic compare-and-swap transactions, watches from a revision, leases). Every
/// commit rewrites the file with atomic replace (temporary file, fsync, rename, fsync of the directory): a crash
/// leaves the state before or after the commit, never a mix. Several processes may open the same store (a host and
/// the <c>hci</c> tool, say): each operation takes a lock file (flock: shared to read, exclusive to commit) and first
/// reads the file again when another process changed it since this one last read it (a generation in the file's
/// header tells).
/// </summary>
/// <remarks>
/// <para>Leases never lapse while their process lives (nothing else could renew them). The file records the process
/// that holds each lease (its pid and start time, so a reused pid is not mistaken for it): opening the store and every
/// commit drop the leases whose process is gone, with their keys, as etcd drops them when their time to live passes.
/// Closing the store revokes its own leases. The processes must share one pid namespace (one machine, one container).</para>
/// <para>Watches see this process's changes at once; another process's changes reach them when this process next
/// reads or commits (a put carries its own revision; a delete seen this way carries the revision at which it was
/// seen). Watchers of a local store that need another process's changes poll: the hosts list their volumes every
/// 0.5 s, which does it. Watches are served from the changes seen since the store was opened (the last 100,000); a
/// watch from an older revision gets a <see cref="ClusterStoreException"/> telling the caller to list and watch
/// again.</para>
/// <para>Every commit costs one write and two fsyncs of the whole state: fine for a control plane of a few thousand
/// keys (nodes, volumes, allocated extents); see docs/cluster.md for the measured cost. A read costs a flock and a
/// read of the file's header when nothing changed.</para>
/// </remarks>
public sealed class LocalClusterStore : IClusterStore
{
    private const string LockName = "cluster-store.lock";
    private const int MaxHistory = 100_000;
    private const int MaxWatcherBacklog = 100_000;
    private const int MaxKeyBytes = 4096;
    private const int MaxValueBytes = 16 << 20;

    private static readonly long OwnStartTime = ReadStartTime(Environment.ProcessId) ?? 0;

    /// <summary>Held for each whole operation (lock file and file I/O included): one operation of this process at a time.</summary>
    private readonly Lock _sync = new();
    private readonly SortedDictionary<string, StoreEntry> _entries = new(StringComparer.Ordinal);
    private readonly Dictionary<long, LocalStoreFile.LeaseHolder> _fileLeases = [];
    private readonly Dictionary<long, LocalStoreLease> _leases = [];
    private readonly List<StoreEvent> _history = [];
    private readonly List<Watcher> _watchers = [];
    private readonly StoreLockFile _lock;
    private long _generation = -1;
    private long _revision = 1;
    private long _nextLease = 1;
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

    /// <summary>The store's revision when this process last read or committed (another process may have committed since).</summary>
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
    /// Opens (or creates) the store in <paramref name="directory"/>: reads its file, and drops the keys of leases whose
    /// process is gone. Other processes may have the store open too.
    /// </summary>
    /// <param name="directory">The directory; created when missing.</param>
    /// <returns>The store.</returns>
    /// <exception cref="ClusterStoreException">The file is unreadable or corrupt (the message says what to do).</exception>
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

        var lockFile = StoreLockFile.Open(Path.Combine(directory, LockName), $"the cluster store in '{directory}'");
        var store = new LocalClusterStore(directory, lockFile);
        try
        {
            lock (store._sync)
            {
                using (lockFile.Hold(exclusive: true))
                {
                    File.Delete(Path.Combine(directory, LocalStoreFile.TempName)); // a commit that crashed before its rename (no commit runs now)
                    store.Refresh();
                    store.DropLeasesOfEndedProcesses();
                }

                store._historyStart = store._revision;
                store._history.Clear();
            }

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
            ReadLatest();
            return ValueTask.FromResult<StoreEntry?>(_entries.TryGetValue(key, out var entry) ? entry : null);
        }
    }

    /// <inheritdoc/>
    public ValueTask<StoreRange> ListAsync(string prefix, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(prefix);
        lock (_sync)
        {
            ReadLatest();
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
    public ValueTask<long?> TryCommitAsync(IReadOnlyList<StoreCondition> conditions, IReadOnlyList<StoreWrite> writes, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(conditions);
        ArgumentNullException.ThrowIfNull(writes);
        foreach (var write in writes)
        {
            CheckWrite(write);
        }

        cancellationToken.ThrowIfCancellationRequested();
        lock (_sync)
        {
            ThrowIfUnusable();
            using (_lock.Hold(exclusive: true))
            {
                Refresh();
                DropLeasesOfEndedProcesses();
                foreach (var condition in conditions)
                {
                    long actual = _entries.TryGetValue(condition.Key, out var entry) ? entry.ModRevision : 0;
                    if (actual != condition.ModRevision)
                    {
                        return ValueTask.FromResult<long?>(null);
                    }
                }

                foreach (var write in writes)
                {
                    if (write.Value is not null && write.Lease != 0 && !_fileLeases.ContainsKey(write.Lease))
                    {
                        throw new ClusterStoreException($"Lease {write.Lease} (for key '{write.Key}') was not found: it was revoked, or its process ended. Grant a new lease.");
                    }
                }

                return ValueTask.FromResult<long?>(Apply(writes, _fileLeases));
            }
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
            using (_lock.Hold(exclusive: true))
            {
                Refresh();
                var lease = new LocalStoreLease(this, _nextLease);
                var leases = new Dictionary<long, LocalStoreFile.LeaseHolder>(_fileLeases)
                {
                    [lease.Id] = new LocalStoreFile.LeaseHolder(lease.Id, Environment.ProcessId, OwnStartTime),
                };
                Persist(_revision, _nextLease + 1, leases.Values, _entries.Values);
                _nextLease++;
                _fileLeases[lease.Id] = leases[lease.Id];
                _leases.Add(lease.Id, lease);
                return ValueTask.FromResult<IStoreLease>(lease);
            }
        }
    }

    /// <inheritdoc/>
    public async IAsyncEnumerable<StoreEvent> WatchAsync(string prefix, long afterRevision, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(prefix);
        var watcher = new Watcher(prefix);
        lock (_sync)
        {
            ReadLatest();
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

    /// <summary>Closes the store: its leases are revoked (their keys go), watches end with a
    /// <see cref="ClusterStoreException"/>, and the lock file is closed.</summary>
    /// <returns>A task that completes when the store is closed.</returns>
    public ValueTask DisposeAsync()
    {
        LocalStoreLease[] leases;
        lock (_sync)
        {
            if (_disposed)
            {
                return ValueTask.CompletedTask;
            }

            leases = [.. _leases.Values];
            if (leases.Length > 0 && _failure is null)
            {
                try
                {
                    using (_lock.Hold(exclusive: true))
                    {
                        Refresh();
                        RevokeLocked(leases.Select(l => l.Id).ToHashSet());
                    }
                }
                catch (ClusterStoreException)
                {
                    // The keys stay until another process opens or commits to the store after this one ends.
                }
            }

            _disposed = true;
            _leases.Clear();
            foreach (var watcher in _watchers)
            {
                watcher.Channel.Writer.TryComplete(new ClusterStoreException($"The cluster store in '{Directory}' was closed."));
            }

            _watchers.Clear();
            _lock.Dispose();
        }

        foreach (var lease in leases)
        {
            lease.MarkLost();
        }

        return ValueTask.CompletedTask;
    }

    internal ValueTask RevokeAsync(LocalStoreLease lease)
    {
        lock (_sync)
        {
            if (_disposed || !_leases.Remove(lease.Id))
            {
                return ValueTask.CompletedTask;
            }

            ThrowIfUnusable();
            using (_lock.Hold(exclusive: true))
            {
                Refresh();
                RevokeLocked(new HashSet<long> { lease.Id });
            }
        }

        return ValueTask.CompletedTask;
    }

    /// <summary>The pid's start time (field 22 of /proc/PID/stat, in clock ticks since boot), or null when the process
    /// is gone or a zombie (killed, not yet reaped: it holds nothing any more).</summary>
    internal static long? ReadStartTime(int pid)
    {
        string stat;
        try
        {
            stat = File.ReadAllText($"/proc/{pid.ToString(CultureInfo.InvariantCulture)}/stat");
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return null;
        }

        int close = stat.LastIndexOf(')'); // the name (field 2) may hold spaces and parentheses
        if (close < 0)
        {
            return null;
        }

        var fields = stat[(close + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries); // fields[0] is field 3 (state)
        if (fields.Length < 20 || fields[0] is "Z" or "X" || !long.TryParse(fields[19], NumberStyles.None, CultureInfo.InvariantCulture, out long start))
        {
            return null;
        }

        return start;
    }

    /// <summary>Reads the file again if another process changed it (under a shared lock); the caller holds <see cref="_sync"/>.</summary>
    private void ReadLatest()
    {
        ThrowIfUnusable();
        using (_lock.Hold(exclusive: false))
        {
            Refresh();
        }
    }

    /// <summary>
    /// Brings memory up to the file when its generation differs from the one this process last read or wrote (the
    /// caller holds <see cref="_sync"/> and the lock file); the keys that changed go to the watchers.
    /// </summary>
    private void Refresh()
    {
        string path = Path.Combine(Directory, LocalStoreFile.FileName);
        byte[] data;
        try
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, bufferSize: 0);
            Span<byte> header = stackalloc byte[16];
            int read = stream.ReadAtLeast(header, header.Length, throwOnEndOfStream: false);
            long generation = LocalStoreFile.ReadGeneration(header[..read]);
            if (generation >= 0 && generation == _generation)
            {
                return; // nobody changed it
            }

            stream.Position = 0;
            data = new byte[checked((int)stream.Length)];
            stream.ReadExactly(data);
        }
        catch (FileNotFoundException)
        {
            return; // no commit yet: the empty store
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new ClusterStoreException($"Cannot read the cluster store '{path}': {ex.Message} Check the file's permissions and the disk.", ex);
        }

        LocalStoreFile.Contents contents;
        try
        {
            contents = LocalStoreFile.Parse(data);
        }
        catch (InvalidDataException ex)
        {
            throw new ClusterStoreException($"The cluster store '{path}' is corrupt: {ex.Message}. Hci replaces it atomically, so this is damage from outside (the disk, an edit). Restore it from a backup; or, to start an empty cluster (every volume record is lost, the data on the devices is not), move it away.", ex);
        }

        var changes = new List<StoreEvent>();
        var next = new SortedDictionary<string, StoreEntry>(StringComparer.Ordinal);
        foreach (var entry in contents.Entries)
        {
            next.Add(entry.Key, entry);
            if (!_entries.TryGetValue(entry.Key, out var old) || old.ModRevision != entry.ModRevision)
            {
                changes.Add(new StoreEvent(entry, Deleted: false));
            }
        }

        foreach (var key in _entries.Keys)
        {
            if (!next.ContainsKey(key))
            {
                changes.Add(new StoreEvent(new StoreEntry(key, ReadOnlyMemory<byte>.Empty, contents.Revision), Deleted: true));
            }
        }

        _entries.Clear();
        foreach (var (key, entry) in next)
        {
            _entries.Add(key, entry);
        }

        _fileLeases.Clear();
        foreach (var lease in contents.Leases)
        {
            _fileLeases[lease.Id] = lease;
        }

        _generation = contents.Generation;
        _revision = contents.Revision;
        _nextLease = Math.Max(contents.NextLease, _nextLease);
        foreach (var id in _leases.Keys.Where(id => !_fileLeases.ContainsKey(id)).ToList())
        {
            _leases.Remove(id, out var lost); // revoked by hand in the file, or the file was replaced
            lost!.MarkLost();
        }

        if (changes.Count > 0)
        {
            changes.Sort((a, b) => a.Entry.ModRevision.CompareTo(b.Entry.ModRevision));
            Publish(changes);
        }
    }

    /// <summary>Drops the leases whose holding process is gone, with their keys (the caller holds the exclusive lock).</summary>
    private void DropLeasesOfEndedProcesses()
    {
        var ended = new HashSet<long>();
        var alive = new Dictionary<int, bool>();
        foreach (var lease in _fileLeases.Values)
        {
            if (!alive.TryGetValue(lease.Pid, out bool lives))
            {
                lives = ReadStartTime(lease.Pid) == lease.StartTime;
                alive[lease.Pid] = lives;
            }

            if (!lives)
            {
                ended.Add(lease.Id);
            }
        }

        // Keys of a lease the file does not know (a store file of the first layout, whose leases were all of this
        // process's previous life) go too.
        bool orphans = _entries.Values.Any(e => e.Lease != 0 && !_fileLeases.ContainsKey(e.Lease));
        if (ended.Count > 0 || orphans)
        {
            RevokeLocked(ended);
        }
    }

    /// <summary>Removes leases from the file with their keys, and keys of leases the file does not hold (the caller holds
    /// the exclusive lock and has refreshed).</summary>
    private void RevokeLocked(IReadOnlySet<long> ids)
    {
        var leases = _fileLeases.Where(l => !ids.Contains(l.Key)).ToDictionary();
        var deletes = _entries.Values.Where(e => e.Lease != 0 && !leases.ContainsKey(e.Lease)).Select(e => StoreWrite.Delete(e.Key)).ToList();
        Apply(deletes, leases);
        _fileLeases.Clear();
        foreach (var (id, lease) in leases)
        {
            _fileLeases.Add(id, lease);
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

    /// <summary>Applies writes whose conditions held, and writes the leases (the caller holds <see cref="_sync"/> and
    /// the exclusive lock): the file first, then memory, then the watchers.</summary>
    private long Apply(IReadOnlyList<StoreWrite> writes, IReadOnlyDictionary<long, LocalStoreFile.LeaseHolder> leases)
    {
        long revision = _revision + 1;
        var next = new SortedDictionary<string, StoreEntry>(_entries, StringComparer.Ordinal);
        var changes = new List<StoreEvent>(writes.Count);
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
            if (leases.Count != _fileLeases.Count)
            {
                Persist(_revision, _nextLease, leases.Values.ToList(), _entries.Values);
            }

            return _revision;
        }

        Persist(revision, _nextLease, leases.Values.ToList(), next.Values);
        _entries.Clear();
        foreach (var (key, entry) in next)
        {
            _entries.Add(key, entry);
        }

        _revision = revision;
        Publish(changes);
        return revision;
    }

    /// <summary>Writes the file (the caller holds the exclusive lock) at the next generation.</summary>
    private void Persist(long revision, long nextLease, IReadOnlyCollection<LocalStoreFile.LeaseHolder> leases, IReadOnlyCollection<StoreEntry> entries)
    {
        long generation = _generation + 1;
        try
        {
            LocalStoreFile.Replace(Directory, LocalStoreFile.Serialize(generation, revision, nextLease, leases, entries), BeforeReplaceForTests);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // Where the write failed decides what is on disk (old or new); memory can no longer tell. Refuse all further
            // requests: reopening reads whichever state the disk holds.
            _failure = ex;
            throw new ClusterStoreException($"Cannot write the cluster store in '{Directory}': {ex.Message} The store refuses further requests: free space or fix permissions, then restart the process (the file holds the state before or after this commit).", ex);
        }

        _generation = generation;
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
