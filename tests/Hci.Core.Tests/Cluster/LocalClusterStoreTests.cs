using System.Diagnostics;
using System.Text;
using Hci.Core.Cluster;
using Xunit.Abstractions;

namespace Hci.Core.Tests.Cluster;

/// <summary>A temporary directory for one test, removed at the end.</summary>
internal sealed class TempDir : IDisposable
{
    public TempDir() => System.IO.Directory.CreateDirectory(Path);

    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"hci-store-{Guid.NewGuid():N}");

    public void Dispose()
    {
        try
        {
            System.IO.Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

public sealed class LocalClusterStoreContractTests : ClusterStoreContract, IDisposable
{
    private readonly TempDir _dir = new();

    protected override ValueTask<IClusterStore> OpenStoreAsync() => ValueTask.FromResult<IClusterStore>(LocalClusterStore.Open(_dir.Path));

    public void Dispose() => _dir.Dispose();
}

public sealed class LocalClusterStoreTests : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly ITestOutputHelper _output;

    public LocalClusterStoreTests(ITestOutputHelper output) => _output = output;

    public void Dispose() => _dir.Dispose();

    private static ReadOnlyMemory<byte> Bytes(string text) => Encoding.UTF8.GetBytes(text);

    private static string Text(StoreEntry? entry) => entry is null ? "<none>" : Encoding.UTF8.GetString(entry.Value.Value.Span);

    [Fact]
    public async Task EveryCommittedKeyAndRevisionSurvivesReopening()
    {
        long revision;
        await using (var store = LocalClusterStore.Open(_dir.Path))
        {
            await store.TryCommitAsync([], [StoreWrite.Put("a", Bytes("1")), StoreWrite.Put("b", Bytes("2"))]);
            revision = (await store.TryCommitAsync([], [StoreWrite.Delete("a"), StoreWrite.Put("c", Bytes("3"))]))!.Value;
        }

        await using (var store = LocalClusterStore.Open(_dir.Path))
        {
            Assert.Equal(revision, store.Revision);
            var range = await store.ListAsync(string.Empty);
            Assert.Equal(["b", "c"], range.Entries.Select(e => e.Key));
            Assert.Equal("3", Text(await store.GetAsync("c")));
            Assert.Equal(revision, (await store.GetAsync("c"))!.Value.ModRevision);
            long next = (await store.TryCommitAsync([new StoreCondition("c", revision)], [StoreWrite.Put("c", Bytes("4"))]))!.Value;
            Assert.Equal(revision + 1, next);
        }
    }

    [Fact]
    public async Task KeysOfLeasesFromBeforeAReopenAreDropped()
    {
        await using (var store = LocalClusterStore.Open(_dir.Path))
        {
            var lease = await store.GrantLeaseAsync(TimeSpan.FromSeconds(5));
            await store.TryCommitAsync([], [StoreWrite.Put("alive/n1", Bytes(string.Empty), lease.Id), StoreWrite.Put("nodes/n1", Bytes("{}"))]);
            Assert.NotNull(await store.GetAsync("alive/n1"));
        }

        await using (var store = LocalClusterStore.Open(_dir.Path))
        {
            Assert.Null(await store.GetAsync("alive/n1"));
            Assert.NotNull(await store.GetAsync("nodes/n1"));
        }
    }

    [Fact]
    public async Task ACrashBetweenTheTemporaryWriteAndTheRenameLeavesTheOldState()
    {
        await using (var store = LocalClusterStore.Open(_dir.Path))
        {
            await store.TryCommitAsync([], [StoreWrite.Put("k", Bytes("old"))]);
            store.BeforeReplaceForTests = () => throw new IOException("simulated crash before the rename");
            await Assert.ThrowsAsync<ClusterStoreException>(async () => await store.TryCommitAsync([], [StoreWrite.Put("k", Bytes("new")), StoreWrite.Put("k2", Bytes("new"))]));

            Assert.True(File.Exists(Path.Combine(_dir.Path, LocalStoreFile.TempName)), "the new state was written to the temporary file");

            // A store whose write failed refuses everything: memory may no longer match the disk.
            var ex = await Assert.ThrowsAsync<ClusterStoreException>(async () => await store.GetAsync("k"));
            Assert.Contains("restart", ex.Message);
        }

        await using (var store = LocalClusterStore.Open(_dir.Path))
        {
            Assert.Equal("old", Text(await store.GetAsync("k")));
            Assert.Null(await store.GetAsync("k2"));
            Assert.False(File.Exists(Path.Combine(_dir.Path, LocalStoreFile.TempName)));
        }
    }

    [Fact]
    public async Task ATornTemporaryFileFromACrashIsIgnored()
    {
        await using (var store = LocalClusterStore.Open(_dir.Path))
        {
            await store.TryCommitAsync([], [StoreWrite.Put("k", Bytes("kept"))]);
        }

        await File.WriteAllBytesAsync(Path.Combine(_dir.Path, LocalStoreFile.TempName), [1, 2, 3]);
        await using (var store = LocalClusterStore.Open(_dir.Path))
        {
            Assert.Equal("kept", Text(await store.GetAsync("k")));
        }
    }

    [Theory]
    [InlineData("flip")]
    [InlineData("truncate")]
    [InlineData("garbage")]
    public async Task ACorruptStoreFileIsRefusedWithAMessageThatSaysWhatToDo(string damage)
    {
        await using (var store = LocalClusterStore.Open(_dir.Path))
        {
            await store.TryCommitAsync([], [StoreWrite.Put("hci/volumes/v1", Bytes("{\"name\":\"v1\"}"))]);
        }

        string file = Path.Combine(_dir.Path, LocalStoreFile.FileName);
        byte[] data = await File.ReadAllBytesAsync(file);
        data = damage switch
        {
            "flip" => Flip(data, data.Length / 2),
            "truncate" => data[..(data.Length - 5)],
            _ => Encoding.ASCII.GetBytes("{ not a store }"),
        };
        await File.WriteAllBytesAsync(file, data);
        var ex = Assert.Throws<ClusterStoreException>(() => LocalClusterStore.Open(_dir.Path));
        _output.WriteLine(ex.Message);
        Assert.Contains("is corrupt", ex.Message);
        Assert.Contains("Restore it from a backup", ex.Message);

        // The lock was released: once the file is moved away, the store opens (empty).
        File.Move(file, file + ".bad");
        await using var fresh = LocalClusterStore.Open(_dir.Path);
        Assert.Empty((await fresh.ListAsync(string.Empty)).Entries);

        static byte[] Flip(byte[] bytes, int at)
        {
            bytes[at] ^= 0x10;
            return bytes;
        }
    }

    [Fact]
    public async Task TwoOpensOfOneStoreSeeEachOthersCommitsAndAWatchSeesTheOthersChangeOnTheNextOperation()
    {
        await using var first = LocalClusterStore.Open(_dir.Path);
        await using var second = LocalClusterStore.Open(_dir.Path);
        long revision = (await first.TryCommitAsync([], [StoreWrite.Put("k", Bytes("1"))]))!.Value;
        using var cancel = new CancellationTokenSource(Deadline.Default);
        await using var watch = second.WatchAsync("k", revision, cancel.Token).GetAsyncEnumerator(cancel.Token);
        var next = watch.MoveNextAsync();

        Assert.Equal("1", Text(await second.GetAsync("k")));
        Assert.Null(await second.TryCommitAsync([new StoreCondition("k", 0)], [StoreWrite.Put("k", Bytes("lost"))]));
        long changed = (await first.TryCommitAsync([new StoreCondition("k", revision)], [StoreWrite.Put("k", Bytes("2"))]))!.Value;
        Assert.False(next.IsCompleted, "the other store's change is not seen before an operation here");

        Assert.Equal("2", Text(await second.GetAsync("k")));
        Assert.True(await next);
        Assert.Equal(changed, watch.Current.Entry.ModRevision);
        Assert.Equal("2", Encoding.UTF8.GetString(watch.Current.Entry.Value.Span));
    }

    [Fact]
    public async Task ConcurrentCompareAndSwapIncrementsFromTwoOtherProcessesAndThisOneLoseNoUpdate()
    {
        const int PerWriter = 60;
        var children = new[] { StartChild("increment", _dir.Path, "counter", $"{PerWriter}"), StartChild("increment", _dir.Path, "counter", $"{PerWriter}") };
        try
        {
            await using var store = LocalClusterStore.Open(_dir.Path);
            await Program.IncrementAsync(store, "counter", PerWriter);
            foreach (var child in children)
            {
                await WaitForExitAsync(child);
                Assert.Equal(0, child.ExitCode);
            }

            Assert.Equal($"{3 * PerWriter}", Text(await store.GetAsync("counter")));
        }
        finally
        {
            KillAll(children);
        }
    }

    [Fact]
    public async Task ALeaseHeldByALiveProcessSurvivesAnotherProcessOpeningAndCommittingAndGoesWhenItCloses()
    {
        var holder = StartChild("hold-lease", _dir.Path, "alive/n1");
        try
        {
            Assert.Equal("ready", await holder.StandardOutput.ReadLineAsync());
            await using (var store = LocalClusterStore.Open(_dir.Path))
            {
                var entry = await store.GetAsync("alive/n1");
                Assert.NotNull(entry);
                Assert.Equal($"{holder.Id}", Text(entry));
                Assert.NotNull(await store.TryCommitAsync([], [StoreWrite.Put("other", Bytes("x"))]));
                Assert.NotNull(await store.GetAsync("alive/n1"));
            }

            await using var again = LocalClusterStore.Open(_dir.Path);
            Assert.NotNull(await again.GetAsync("alive/n1"));

            holder.StandardInput.Close(); // the holder closes its store: it revokes its lease
            await WaitForExitAsync(holder);
            Assert.Equal(0, holder.ExitCode);
            Assert.Null(await again.GetAsync("alive/n1"));
        }
        finally
        {
            KillAll([holder]);
        }
    }

    [Fact]
    public async Task TheLeaseOfAKilledProcessIsDroppedByTheNextCommitOrOpen()
    {
        var holders = new[] { StartChild("hold-lease", _dir.Path, "alive/n1"), StartChild("hold-lease", _dir.Path, "alive/n2") };
        try
        {
            foreach (var holder in holders)
            {
                Assert.Equal("ready", await holder.StandardOutput.ReadLineAsync());
            }

            await using var store = LocalClusterStore.Open(_dir.Path);
            Assert.NotNull(await store.GetAsync("alive/n1"));
            holders[0].Kill(); // SIGKILL: no chance to revoke
            await WaitForExitAsync(holders[0]);

            Assert.NotNull(await store.TryCommitAsync([], [StoreWrite.Put("other", Bytes("x"))]));
            Assert.Null(await store.GetAsync("alive/n1"));
            Assert.NotNull(await store.GetAsync("alive/n2"));

            holders[1].Kill();
            await WaitForExitAsync(holders[1]);
            await using var reopened = LocalClusterStore.Open(_dir.Path);
            Assert.Null(await reopened.GetAsync("alive/n2"));
            Assert.Equal("x", Text(await reopened.GetAsync("other")));
        }
        finally
        {
            KillAll(holders);
        }
    }

    [Fact]
    public async Task ACommitWaitsForAnotherProcessHoldingTheLockFileAndGoesOnWhenItDies()
    {
        // A real second process: flock(1) holds the store's lock file (as a commit in another process would) until killed.
        string lockPath = Path.Combine(_dir.Path, "cluster-store.lock");
        await using var store = LocalClusterStore.Open(_dir.Path);
        var holder = Process.Start(new ProcessStartInfo("flock", ["-x", lockPath, "sh", "-c", "echo locked; exec sleep 600"]) { UseShellExecute = false, RedirectStandardOutput = true })!;
        try
        {
            Assert.Equal("locked", await holder.StandardOutput.ReadLineAsync());
            var commit = Task.Run(async () => await store.TryCommitAsync([], [StoreWrite.Put("k", Bytes("v"))]));
            holder.Kill(entireProcessTree: true);
            await holder.WaitForExitAsync();
            Assert.NotNull(await commit.WaitAsync(Deadline.Default));
            Assert.Equal("v", Text(await store.GetAsync("k")));
        }
        finally
        {
            KillAll([holder]);
        }
    }

    [Fact]
    public async Task AStoreFileOfTheFirstLayoutIsReadAndItsLeasedKeysAreDropped()
    {
        // The first layout: magic, revision, next lease, count, keys, hash (no generation, no lease table).
        var entries = new[] { new StoreEntry("alive/n1", Bytes(string.Empty), 3, 1), new StoreEntry("nodes/n1", Bytes("{}"), 2, 0) };
        byte[] v2 = LocalStoreFile.Serialize(0, 3, 2, [], entries);
        var body = new List<byte>("HCISTOR1"u8.ToArray());
        body.AddRange(v2.AsSpan(16, 16).ToArray()); // revision, next lease
        body.AddRange(v2.AsSpan(8 + 8 + 8 + 8 + 4, v2.Length - 36 - 8).ToArray()); // key count and keys
        body.AddRange(BitConverter.GetBytes(System.IO.Hashing.XxHash3.HashToUInt64(body.ToArray())));
        await File.WriteAllBytesAsync(Path.Combine(_dir.Path, LocalStoreFile.FileName), body.ToArray());

        await using var store = LocalClusterStore.Open(_dir.Path);
        Assert.Null(await store.GetAsync("alive/n1"));
        Assert.Equal("{}", Text(await store.GetAsync("nodes/n1")));
        Assert.Equal(4, store.Revision);
    }

    private static Process StartChild(params string[] args)
    {
        var psi = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
        };
        psi.ArgumentList.Add("exec");
        psi.ArgumentList.Add(typeof(Program).Assembly.Location);
        foreach (string arg in args)
        {
            psi.ArgumentList.Add(arg);
        }

        return Process.Start(psi)!;
    }

    private static async Task WaitForExitAsync(Process process)
    {
        using var timeout = new CancellationTokenSource(Deadline.Default * 2);
        await process.WaitForExitAsync(timeout.Token);
    }

    private static void KillAll(IEnumerable<Process> processes)
    {
        foreach (var process in processes)
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
                process.WaitForExit();
            }

            process.Dispose();
        }
    }

    [Fact]
    public async Task CommitCostIsMeasured()
    {
        await using var store = LocalClusterStore.Open(_dir.Path);
        var value = new byte[150]; // an extent record's size
        foreach (int keys in new[] { 100, 2000 })
        {
            var writes = Enumerable.Range(0, keys).Select(i => StoreWrite.Put($"hci/extents/1/{i:D12}", value)).ToList();
            await store.TryCommitAsync([], writes);
            var watch = Stopwatch.StartNew();
            const int Commits = 20;
            for (int i = 0; i < Commits; i++)
            {
                await store.TryCommitAsync([], [StoreWrite.Put("hci/volumes/v", value)]);
            }

            _output.WriteLine($"{keys} keys: {watch.Elapsed.TotalMilliseconds / Commits:0.00} ms per commit");
        }
    }
}

public sealed class LocalClusterCatalogTests : ClusterCatalogContract, IDisposable
{
    private readonly List<TempDir> _dirs = [];

    protected override ValueTask<IClusterStore> OpenEmptyStoreAsync()
    {
        var dir = new TempDir();
        _dirs.Add(dir);
        return ValueTask.FromResult<IClusterStore>(LocalClusterStore.Open(dir.Path));
    }

    public void Dispose() => _dirs.ForEach(d => d.Dispose());
}
