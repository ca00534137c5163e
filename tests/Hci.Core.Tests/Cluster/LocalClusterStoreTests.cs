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
    public async Task ASecondOpenOfTheSameStoreIsRefusedNamingTheHoldersPid()
    {
        await using var store = LocalClusterStore.Open(_dir.Path);
        var ex = Assert.Throws<ClusterStoreException>(() => LocalClusterStore.Open(_dir.Path));
        Assert.Contains($"in use by process {Environment.ProcessId}", ex.Message);
        Assert.Contains("only one process", ex.Message);
    }

    [Fact]
    public async Task AnotherProcessHoldingTheStoreIsNamedAndItsDeathReleasesTheLock()
    {
        // A real second process: flock(1) holds the store's lock file while it sleeps, as a host would.
        string lockPath = Path.Combine(_dir.Path, "cluster-store.lock");
        var holder = Process.Start(new ProcessStartInfo("flock", ["-x", lockPath, "sh", "-c", $"echo $$ > {lockPath}; exec sleep 600"]) { UseShellExecute = false })!;
        try
        {
            string message = string.Empty;
            await Deadline.WaitUntilAsync(
                () =>
                {
                    try
                    {
                        LocalClusterStore.Open(_dir.Path).DisposeAsync().AsTask().Wait();
                        return false;
                    }
                    catch (ClusterStoreException ex)
                    {
                        message = ex.Message;
                        return message.Contains("(sleep)", StringComparison.Ordinal);
                    }
                },
                "the holder to take the lock and write its pid");
            Assert.Matches("in use by process [0-9]+ \\(sleep\\)", message);
        }
        finally
        {
            holder.Kill(entireProcessTree: true);
            await holder.WaitForExitAsync();
        }

        await using var store = LocalClusterStore.Open(_dir.Path);
        Assert.NotNull(store);
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
