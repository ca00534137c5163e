using System.Text;
using Hci.Core.Cluster;

namespace Hci.Cluster.Tests;

/// <summary>The store's key-value semantics against a real etcd: CAS, put-if-absent, revisions, lists, deletes, watches.</summary>
public sealed class EtcdClusterStoreTests(EtcdFixture etcd) : IClassFixture<EtcdFixture>
{
    private static ReadOnlyMemory<byte> Bytes(string s) => Encoding.UTF8.GetBytes(s);

    private static string Text(ReadOnlyMemory<byte> b) => Encoding.UTF8.GetString(b.Span);

    [Fact]
    public async Task PutIfAbsentAppliesOnceAndASecondOneReturnsNull()
    {
        await using var store = etcd.Store();
        var first = await store.TryCommitAsync([new StoreCondition("k", 0)], [StoreWrite.Put("k", Bytes("one"))]);
        var second = await store.TryCommitAsync([new StoreCondition("k", 0)], [StoreWrite.Put("k", Bytes("two"))]);

        Assert.NotNull(first);
        Assert.Null(second);
        var entry = await store.GetAsync("k");
        Assert.Equal("one", Text(entry!.Value.Value));
        Assert.Equal(first, entry.Value.ModRevision);
    }

    [Fact]
    public async Task ACommitThatAlsoDeletesKeysThatDoNotExistApplies()
    {
        // A volume's delete also deletes its rebuild and scrub records, which most volumes never had.
        await using var store = etcd.Store();
        long created = (await store.TryCommitAsync([], [StoreWrite.Put("volume", Bytes("v"))]))!.Value;
        var deleted = await store.TryCommitAsync([new StoreCondition("volume", created)], [StoreWrite.Delete("volume"), StoreWrite.Delete("rebuild/v"), StoreWrite.Delete("scrub/v")]);

        Assert.NotNull(deleted);
        Assert.Null(await store.GetAsync("volume"));
        Assert.Empty((await store.ListAsync("rebuild/")).Entries);
    }

    [Fact]
    public async Task CompareAndSwapAppliesOnlyAtTheKeysCurrentRevision()
    {
        await using var store = etcd.Store();
        long created = (await store.TryCommitAsync([], [StoreWrite.Put("epoch", Bytes("1"))]))!.Value;
        long swapped = (await store.TryCommitAsync([new StoreCondition("epoch", created)], [StoreWrite.Put("epoch", Bytes("2"))]))!.Value;
        var stale = await store.TryCommitAsync([new StoreCondition("epoch", created)], [StoreWrite.Put("epoch", Bytes("3"))]);

        Assert.True(swapped > created);
        Assert.Null(stale);
        var entry = (await store.GetAsync("epoch"))!.Value;
        Assert.Equal("2", Text(entry.Value));
        Assert.Equal(swapped, entry.ModRevision);
    }

    [Fact]
    public async Task ATransactionWithOneFailedConditionWritesNothing()
    {
        await using var store = etcd.Store();
        long a = (await store.TryCommitAsync([], [StoreWrite.Put("a", Bytes("a0"))]))!.Value;
        await store.TryCommitAsync([], [StoreWrite.Put("b", Bytes("b0"))]);

        var result = await store.TryCommitAsync(
            [new StoreCondition("a", a), new StoreCondition("b", 1)],
            [StoreWrite.Put("a", Bytes("a1")), StoreWrite.Put("b", Bytes("b1")), StoreWrite.Put("c", Bytes("c1"))]);

        Assert.Null(result);
        Assert.Equal("a0", Text((await store.GetAsync("a"))!.Value.Value));
        Assert.Equal("b0", Text((await store.GetAsync("b"))!.Value.Value));
        Assert.Null(await store.GetAsync("c"));
    }

    [Fact]
    public async Task EveryKeyOfOneTransactionGetsTheSameNewRevision()
    {
        await using var store = etcd.Store();
        long before = (await store.ListAsync("")).Revision;
        long applied = (await store.TryCommitAsync([], [StoreWrite.Put("x", Bytes("1")), StoreWrite.Put("y", Bytes("2"))]))!.Value;

        Assert.True(applied > before);
        Assert.Equal(applied, (await store.GetAsync("x"))!.Value.ModRevision);
        Assert.Equal(applied, (await store.GetAsync("y"))!.Value.ModRevision);
        Assert.True((await store.ListAsync("")).Revision >= applied);
    }

    [Fact]
    public async Task DeleteRemovesTheKeyAndAConditionalDeleteNeedsTheCurrentRevision()
    {
        await using var store = etcd.Store();
        long r1 = (await store.TryCommitAsync([], [StoreWrite.Put("gone", Bytes("v"))]))!.Value;
        long r2 = (await store.TryCommitAsync([], [StoreWrite.Put("gone", Bytes("w"))]))!.Value;

        Assert.Null(await store.TryCommitAsync([new StoreCondition("gone", r1)], [StoreWrite.Delete("gone")]));
        Assert.NotNull(await store.GetAsync("gone"));
        Assert.NotNull(await store.TryCommitAsync([new StoreCondition("gone", r2)], [StoreWrite.Delete("gone")]));
        Assert.Null(await store.GetAsync("gone"));
        // A deleted key is absent again: put-if-absent works on it, and deleting nothing is not an error.
        Assert.NotNull(await store.TryCommitAsync([], [StoreWrite.Delete("gone")]));
        Assert.NotNull(await store.TryCommitAsync([new StoreCondition("gone", 0)], [StoreWrite.Put("gone", Bytes("again"))]));
    }

    [Fact]
    public async Task ListReadsEveryKeyUnderThePrefixInKeyOrderAtOneRevisionAcrossPages()
    {
        await using var store = etcd.Store();
        store.PageSize = 3;
        var keys = Enumerable.Range(0, 10).Select(i => $"vol/{i:D3}").ToList();
        foreach (var key in keys.AsEnumerable().Reverse())
        {
            await store.TryCommitAsync([], [StoreWrite.Put(key, Bytes(key))]);
        }

        await store.TryCommitAsync([], [StoreWrite.Put("vol", Bytes("not under vol/")), StoreWrite.Put("volume/1", Bytes("nor this"))]);
        var list = await store.ListAsync("vol/");
        long revision = list.Revision;
        // Writes after the list do not change what it read.
        await store.TryCommitAsync([], [StoreWrite.Put("vol/005", Bytes("later"))]);

        Assert.Equal(keys, list.Entries.Select(e => e.Key));
        Assert.All(list.Entries, e => Assert.Equal(e.Key, Text(e.Value)));
        Assert.All(list.Entries, e => Assert.True(e.ModRevision <= revision));
        Assert.Empty((await store.ListAsync("nothing/")).Entries);
    }

    [Fact]
    public async Task StoresWithDifferentPrefixesDoNotSeeEachOthersKeys()
    {
        await using var a = etcd.Store();
        await using var b = etcd.Store();
        await a.TryCommitAsync([], [StoreWrite.Put("same", Bytes("a"))]);
        await b.TryCommitAsync([], [StoreWrite.Put("same", Bytes("b"))]);

        Assert.Equal("a", Text((await a.GetAsync("same"))!.Value.Value));
        Assert.Equal(["same"], (await b.ListAsync("")).Entries.Select(e => e.Key));
    }

    [Fact]
    public async Task WatchStreamsPutsAndDeletesAfterTheRevisionInOrder()
    {
        await using var store = etcd.Store();
        await store.TryCommitAsync([], [StoreWrite.Put("w/before", Bytes("0"))]);
        long start = (await store.ListAsync("w/")).Revision;
        var expected = new List<(string Key, bool Deleted, long Revision)>();
        for (int i = 0; i < 5; i++)
        {
            long r = (await store.TryCommitAsync([], [StoreWrite.Put($"w/{i}", Bytes($"{i}"))]))!.Value;
            expected.Add(($"w/{i}", false, r));
        }

        await store.TryCommitAsync([], [StoreWrite.Put("elsewhere", Bytes("x"))]);
        long d = (await store.TryCommitAsync([], [StoreWrite.Delete("w/2")]))!.Value;
        expected.Add(("w/2", true, d));

        var seen = await Collect(store, "w/", start, expected.Count);

        Assert.Equal(expected, seen.Select(e => (e.Entry.Key, e.Deleted, e.Entry.ModRevision)));
        Assert.Equal("3", Text(seen[3].Entry.Value));
        Assert.True(seen[^1].Entry.Value.IsEmpty);
    }

    [Fact]
    public async Task WatchResumesAfterAGivenRevisionWithExactlyTheLaterChanges()
    {
        await using var store = etcd.Store();
        var revisions = new List<long>();
        for (int i = 0; i < 6; i++)
        {
            revisions.Add((await store.TryCommitAsync([], [StoreWrite.Put("r/k", Bytes($"{i}"))]))!.Value);
        }

        var seen = await Collect(store, "r/", revisions[2], 3);

        Assert.Equal(revisions[3..], seen.Select(e => e.Entry.ModRevision));
        Assert.Equal(["3", "4", "5"], seen.Select(e => Text(e.Entry.Value)));
    }

    [Fact]
    public async Task WatchSeesChangesMadeWhileItWaits()
    {
        await using var store = etcd.Store();
        long start = (await store.ListAsync("live/")).Revision;
        var watching = Collect(store, "live/", start, 2);
        await store.TryCommitAsync([], [StoreWrite.Put("live/a", Bytes("1"))]);
        await store.TryCommitAsync([], [StoreWrite.Put("live/b", Bytes("2"))]);

        var seen = await watching;

        Assert.Equal(["live/a", "live/b"], seen.Select(e => e.Entry.Key));
    }

    [Fact]
    public async Task WatchFromACompactedRevisionFailsTellingTheCallerToReList()
    {
        await using var store = etcd.Store();
        long old = (await store.TryCommitAsync([], [StoreWrite.Put("c/k", Bytes("1"))]))!.Value;
        long now = (await store.TryCommitAsync([], [StoreWrite.Put("c/k", Bytes("2"))]))!.Value;
        await store.TryCommitAsync([], [StoreWrite.Put("c/k", Bytes("3"))]);
        await etcd.Server.CompactAsync(now);

        var e = await Assert.ThrowsAsync<ClusterStoreException>(() => Collect(store, "c/", old - 1, 1));

        Assert.Contains("compacted", e.Message, StringComparison.Ordinal);
        Assert.Contains("ListAsync", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AnInvalidTransactionIsAClusterStoreExceptionNotAResult()
    {
        await using var store = etcd.Store();

        var e = await Assert.ThrowsAsync<ClusterStoreException>(async () =>
            await store.TryCommitAsync([], [StoreWrite.Put("dup", Bytes("1")), StoreWrite.Put("dup", Bytes("2"))]));

        Assert.Contains("twice", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task LeaseKeysGoWhenTheLeaseIsDisposedAndLostCompletes()
    {
        await using var store = etcd.Store();
        var lease = await store.GrantLeaseAsync(TimeSpan.FromSeconds(10));
        await store.TryCommitAsync([], [StoreWrite.Put("alive/n1", Bytes(""), lease.Id)]);
        Assert.Equal(lease.Id, (await store.GetAsync("alive/n1"))!.Value.Lease);
        Assert.False(lease.Lost.IsCompleted);

        await lease.DisposeAsync();

        Assert.Null(await store.GetAsync("alive/n1"));
        Assert.True(lease.Lost.IsCompleted);
    }

    [Fact]
    public async Task LeaseKeepAliveHoldsItsKeysOverSeveralTtls()
    {
        await using var store = etcd.Store();
        await using var lease = await store.GrantLeaseAsync(TimeSpan.FromSeconds(2));
        await store.TryCommitAsync([], [StoreWrite.Put("alive/n1", Bytes(""), lease.Id)]);

        // Four TTLs: without keepalives the key would be gone after one.
        var until = DateTime.UtcNow + TimeSpan.FromSeconds(8);
        while (DateTime.UtcNow < until)
        {
            Assert.NotNull(await store.GetAsync("alive/n1"));
            Assert.False(lease.Lost.IsCompleted);
            await Task.Delay(250);
        }
    }

    [Fact]
    public async Task ALeaseRevokedByAnotherClientIsReportedLost()
    {
        await using var store = etcd.Store();
        await using var lease = await store.GrantLeaseAsync(TimeSpan.FromSeconds(3));

        await etcd.Server.RevokeLeaseAsync(lease.Id);

        // The next keepalive (within a third of the TTL) hears that the lease is gone.
        await lease.Lost.WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task ALeaseTtlOutsideOneSecondToADayIsRefused()
    {
        await using var store = etcd.Store();

        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(async () => await store.GrantLeaseAsync(TimeSpan.FromMilliseconds(500)));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(async () => await store.GrantLeaseAsync(TimeSpan.FromDays(2)));
    }

    internal static async Task<List<StoreEvent>> Collect(IClusterStore store, string prefix, long after, int count)
    {
        using var cts = new CancellationTokenSource(Deadline.Default);
        var seen = new List<StoreEvent>();
        await foreach (var e in store.WatchAsync(prefix, after, cts.Token))
        {
            seen.Add(e);
            if (seen.Count == count)
            {
                break;
            }
        }

        return seen;
    }
}
