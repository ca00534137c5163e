using System.Text;
using Hci.Core.Cluster;
using Xunit;

namespace Hci.Testing;

/// <summary>
/// The contract of an <see cref="IClusterStore"/> (etcd's semantics): compare-and-swap on modification revisions,
/// put-if-absent, atomic multi-key transactions, monotonic revisions, reads at one revision, watches that replay
/// every change after a revision in order, and leases whose keys go with them. Every implementation runs it through
/// a small subclass; the tests use keys under a prefix of their own, so a shared server (one etcd for a test run)
/// serves them all.
/// </summary>
public abstract class ClusterStoreContract
{
    /// <summary>A prefix no other test uses.</summary>
    protected string Prefix { get; } = $"contract/{Guid.NewGuid():N}/";

    /// <summary>Opens a store for one test; the test disposes it.</summary>
    /// <returns>The store.</returns>
    protected abstract ValueTask<IClusterStore> OpenStoreAsync();

    protected static ReadOnlyMemory<byte> Bytes(string text) => Encoding.UTF8.GetBytes(text);

    protected static string Text(StoreEntry entry) => Encoding.UTF8.GetString(entry.Value.Span);

    protected static async Task<long> PutAsync(IClusterStore store, string key, string value, long expectedRevision)
    {
        long? revision = await store.TryCommitAsync([new StoreCondition(key, expectedRevision)], [StoreWrite.Put(key, Bytes(value))]);
        Assert.True(revision.HasValue, $"put of {key} at revision {expectedRevision} failed its condition");
        return revision.Value;
    }

    [Fact]
    public async Task PutIfAbsentSucceedsOnceAndTheSecondWriterSeesTheFirstsValue()
    {
        await using var store = await OpenStoreAsync();
        string key = Prefix + "a";
        long revision = await PutAsync(store, key, "first", 0);
        Assert.Null(await store.TryCommitAsync([new StoreCondition(key, 0)], [StoreWrite.Put(key, Bytes("second"))]));
        var entry = await store.GetAsync(key);
        Assert.NotNull(entry);
        Assert.Equal("first", Text(entry.Value));
        Assert.Equal(revision, entry.Value.ModRevision);
    }

    [Fact]
    public async Task CompareAndSwapAppliesOnlyAtTheKeysCurrentRevision()
    {
        await using var store = await OpenStoreAsync();
        string key = Prefix + "cas";
        long first = await PutAsync(store, key, "1", 0);
        long second = await PutAsync(store, key, "2", first);
        Assert.True(second > first);
        Assert.Null(await store.TryCommitAsync([new StoreCondition(key, first)], [StoreWrite.Put(key, Bytes("stale"))]));
        Assert.Equal("2", Text((await store.GetAsync(key))!.Value));
        Assert.Equal(second, (await store.GetAsync(key))!.Value.ModRevision);
    }

    [Fact]
    public async Task AFailedConditionAppliesNoneOfTheTransactionsWrites()
    {
        await using var store = await OpenStoreAsync();
        string a = Prefix + "a", b = Prefix + "b", c = Prefix + "c";
        long ra = await PutAsync(store, a, "a", 0);
        long rb = await PutAsync(store, b, "b", 0);
        var range = await store.ListAsync(Prefix);
        Assert.Null(await store.TryCommitAsync(
            [new StoreCondition(a, ra), new StoreCondition(b, rb - 1)],
            [StoreWrite.Put(a, Bytes("a2")), StoreWrite.Delete(b), StoreWrite.Put(c, Bytes("c"))]));
        var after = await store.ListAsync(Prefix);
        Assert.Equal(range.Entries.Select(e => (e.Key, Text(e), e.ModRevision)), after.Entries.Select(e => (e.Key, Text(e), e.ModRevision)));

        long applied = (await store.TryCommitAsync(
            [new StoreCondition(a, ra), new StoreCondition(b, rb), new StoreCondition(c, 0)],
            [StoreWrite.Put(a, Bytes("a2")), StoreWrite.Delete(b), StoreWrite.Put(c, Bytes("c"))]))!.Value;
        var final = await store.ListAsync(Prefix);
        Assert.Equal([(a, "a2", applied), (c, "c", applied)], final.Entries.Select(e => (e.Key, Text(e), e.ModRevision)));
    }

    [Fact]
    public async Task RevisionsIncreaseWithEveryCommitAndAListReportsTheRevisionItWasReadAt()
    {
        await using var store = await OpenStoreAsync();
        long last = (await store.ListAsync(Prefix)).Revision;
        for (int i = 0; i < 20; i++)
        {
            long revision = await PutAsync(store, Prefix + $"k{i % 3}", $"{i}", (await store.GetAsync(Prefix + $"k{i % 3}"))?.ModRevision ?? 0);
            Assert.True(revision > last, $"revision {revision} after {last}");
            var range = await store.ListAsync(Prefix);
            Assert.True(range.Revision >= revision);
            Assert.All(range.Entries, e => Assert.True(e.ModRevision <= range.Revision));
            last = revision;
        }
    }

    [Fact]
    public async Task ListReturnsOnlyKeysUnderThePrefixInKeyOrder()
    {
        await using var store = await OpenStoreAsync();
        string[] keys = ["v/b", "v/a", "v/c/1", "w/a", "v", "vv/a"];
        foreach (string key in keys)
        {
            await PutAsync(store, Prefix + key, key, 0);
        }

        var range = await store.ListAsync(Prefix + "v/");
        Assert.Equal(["v/a", "v/b", "v/c/1"], range.Entries.Select(e => e.Key[Prefix.Length..]));
        Assert.Empty((await store.ListAsync(Prefix + "none/")).Entries);
    }

    [Fact]
    public async Task ADeletedKeyIsGoneAndCanBeCreatedAgainWithRevisionZero()
    {
        await using var store = await OpenStoreAsync();
        string key = Prefix + "d";
        long revision = await PutAsync(store, key, "x", 0);
        Assert.NotNull(await store.TryCommitAsync([new StoreCondition(key, revision)], [StoreWrite.Delete(key)]));
        Assert.Null(await store.GetAsync(key));
        Assert.Null(await store.TryCommitAsync([new StoreCondition(key, revision)], [StoreWrite.Put(key, Bytes("y"))]));
        await PutAsync(store, key, "y", 0);
        Assert.Equal("y", Text((await store.GetAsync(key))!.Value));
    }

    [Fact]
    public async Task ConcurrentCompareAndSwapIncrementsLoseNoUpdate()
    {
        await using var store = await OpenStoreAsync();
        string key = Prefix + "counter";
        await PutAsync(store, key, "0", 0);
        const int Writers = 4, Increments = 25;
        await Task.WhenAll(Enumerable.Range(0, Writers).Select(_ => Task.Run(async () =>
        {
            for (int i = 0; i < Increments; i++)
            {
                while (true)
                {
                    var entry = (await store.GetAsync(key))!.Value;
                    int value = int.Parse(Text(entry), System.Globalization.CultureInfo.InvariantCulture);
                    if (await store.TryCommitAsync([new StoreCondition(key, entry.ModRevision)], [StoreWrite.Put(key, Bytes($"{value + 1}"))]) is not null)
                    {
                        break;
                    }
                }
            }
        })));
        Assert.Equal($"{Writers * Increments}", Text((await store.GetAsync(key))!.Value));
    }

    [Fact]
    public async Task AWatchSeesEveryChangeAfterItsRevisionInOrderIncludingDeletes()
    {
        await using var store = await OpenStoreAsync();
        long before = await PutAsync(store, Prefix + "w/seen-before", "0", 0);
        long r1 = await PutAsync(store, Prefix + "w/a", "1", 0);
        long r2 = await PutAsync(store, Prefix + "w/a", "2", r1);
        await PutAsync(store, Prefix + "other", "x", 0);
        long r3 = (await store.TryCommitAsync([], [StoreWrite.Delete(Prefix + "w/a"), StoreWrite.Put(Prefix + "w/b", Bytes("3"))]))!.Value;

        using var cancel = new CancellationTokenSource(Deadline.Default);
        var seen = new List<(string Key, string Value, long Revision, bool Deleted)>();
        var watch = Task.Run(async () =>
        {
            await foreach (var change in store.WatchAsync(Prefix + "w/", before, cancel.Token))
            {
                lock (seen)
                {
                    seen.Add((change.Entry.Key[Prefix.Length..], Text(change.Entry), change.Entry.ModRevision, change.Deleted));
                }
            }
        });

        // Changes made while the watch runs arrive after the replayed ones.
        await Deadline.WaitUntilAsync(() => { lock (seen) { return seen.Count == 4; } }, "the replayed changes");
        long r4 = await PutAsync(store, Prefix + "w/c", "4", 0);
        await Deadline.WaitUntilAsync(() => { lock (seen) { return seen.Count == 5; } }, "the live change");
        await cancel.CancelAsync();
        try
        {
            await watch; // a cancelled watch may end or throw OperationCanceledException
        }
        catch (OperationCanceledException)
        {
        }

        Assert.Equal(
            [("w/a", "1", r1, false), ("w/a", "2", r2, false), ("w/a", string.Empty, r3, true), ("w/b", "3", r3, false), ("w/c", "4", r4, false)],
            seen);
    }

    [Fact]
    public async Task KeysOfARevokedLeaseGoAndItsLostTaskCompletes()
    {
        await using var store = await OpenStoreAsync();
        var lease = await store.GrantLeaseAsync(TimeSpan.FromSeconds(10));
        string key = Prefix + "alive/n1";
        Assert.NotNull(await store.TryCommitAsync([], [StoreWrite.Put(key, Bytes(string.Empty), lease.Id), StoreWrite.Put(Prefix + "kept", Bytes("k"))]));
        var entry = await store.GetAsync(key);
        Assert.Equal(lease.Id, entry!.Value.Lease);
        Assert.False(lease.Lost.IsCompleted);

        long revision = (await store.ListAsync(Prefix)).Revision;
        await lease.DisposeAsync();
        await lease.Lost.WaitAsync(Deadline.Default);
        await Deadline.WaitUntilAsync(() => store.GetAsync(key).AsTask().Result is null, "the leased key to go");
        Assert.NotNull(await store.GetAsync(Prefix + "kept"));

        using var cancel = new CancellationTokenSource(Deadline.Default);
        await foreach (var change in store.WatchAsync(Prefix + "alive/", revision, cancel.Token))
        {
            Assert.True(change.Deleted);
            Assert.Equal(key, change.Entry.Key);
            break;
        }
    }

    [Fact]
    public async Task AWriteWithARevokedLeaseIsRefused()
    {
        await using var store = await OpenStoreAsync();
        var lease = await store.GrantLeaseAsync(TimeSpan.FromSeconds(10));
        await lease.DisposeAsync();
        await Assert.ThrowsAsync<ClusterStoreException>(async () =>
            await store.TryCommitAsync([], [StoreWrite.Put(Prefix + "late", Bytes("x"), lease.Id)]));
        Assert.Null(await store.GetAsync(Prefix + "late"));
    }
}
