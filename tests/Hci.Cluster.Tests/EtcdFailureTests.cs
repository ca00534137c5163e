using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Hci.Core.Cluster;

namespace Hci.Cluster.Tests;

/// <summary>What the store does when etcd or its client dies: real processes, real SIGKILL, each test its own etcd.</summary>
public sealed class EtcdFailureTests
{
    private static ReadOnlyMemory<byte> Bytes(string s) => Encoding.UTF8.GetBytes(s);

    private static EtcdClusterStore Store(params string[] endpoints) => new(new EtcdClusterStoreOptions
    {
        Endpoints = endpoints,
        RequestTimeout = TimeSpan.FromSeconds(2),
        DialTimeout = TimeSpan.FromSeconds(2),
    });

    private static string ClosedPortUrl()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return $"http://127.0.0.1:{((IPEndPoint)listener.LocalEndpoint).Port}";
    }

    [Fact]
    public async Task AnEtcdThatIsNotRunningGivesAClusterStoreExceptionThatSaysWhatToDo()
    {
        string url = ClosedPortUrl();
        await using var store = Store(url);

        var read = await Assert.ThrowsAsync<ClusterStoreException>(async () => await store.GetAsync("k"));
        var write = await Assert.ThrowsAsync<ClusterStoreException>(async () => await store.TryCommitAsync([], [StoreWrite.Put("k", Bytes("v"))]));
        var connect = await Assert.ThrowsAsync<ClusterStoreException>(() => EtcdClusterStore.ConnectAsync(new EtcdClusterStoreOptions { Endpoints = [url] }));

        foreach (var e in new[] { read, write, connect })
        {
            Assert.Contains(url, e.Message, StringComparison.Ordinal);
            Assert.Contains("is it running?", e.Message, StringComparison.Ordinal);
            Assert.Contains("etcd --data-dir", e.Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task AnEtcdThatDoesNotAnswerTimesOutWithTheRequestTimeoutInTheMessage()
    {
        await using var etcd = await EtcdServer.StartAsync();
        await using var store = Store(etcd.ClientUrl);
        await store.GetAsync("warm-up");
        etcd.Freeze();
        var watch = Stopwatch.StartNew();

        var e = await Assert.ThrowsAsync<ClusterStoreException>(async () => await store.GetAsync("k"));

        Assert.Contains("did not answer", e.Message, StringComparison.Ordinal);
        Assert.Contains("within 2 s", e.Message, StringComparison.Ordinal);
        Assert.InRange(watch.Elapsed, TimeSpan.FromSeconds(1.5), TimeSpan.FromSeconds(10));
        etcd.Thaw();
        Assert.Null(await store.GetAsync("k"));
    }

    [Fact]
    public async Task ReadsFailOverToTheNextEndpointWhenOneIsDown()
    {
        await using var etcd = await EtcdServer.StartAsync();
        await using var store = Store(ClosedPortUrl(), etcd.ClientUrl);

        Assert.Null(await store.GetAsync("k"));
        // Later calls stay on the member that answered, writes included.
        Assert.NotNull(await store.TryCommitAsync([], [StoreWrite.Put("k", Bytes("v"))]));
    }

    [Fact]
    public async Task TheStoreRecoversWhenEtcdRestartsAndKeepsItsData()
    {
        await using var etcd = await EtcdServer.StartAsync();
        await using var store = Store(etcd.ClientUrl);
        long written = (await store.TryCommitAsync([], [StoreWrite.Put("k", Bytes("v"))]))!.Value;

        etcd.Kill();
        await Assert.ThrowsAsync<ClusterStoreException>(async () => await store.GetAsync("k"));
        await etcd.RestartAsync();

        var entry = await store.GetAsync("k");
        Assert.Equal(written, entry!.Value.ModRevision);
        Assert.NotNull(await store.TryCommitAsync([new StoreCondition("k", written)], [StoreWrite.Put("k", Bytes("w"))]));
    }

    [Fact]
    public async Task AWatchRidesOverAnEtcdRestartWithoutLosingOrRepeatingChanges()
    {
        await using var etcd = await EtcdServer.StartAsync();
        await using var store = Store(etcd.ClientUrl);
        long start = (await store.ListAsync("")).Revision;
        var watching = EtcdClusterStoreTests.Collect(store, "w/", start, 3);
        await store.TryCommitAsync([], [StoreWrite.Put("w/1", Bytes("1"))]);

        etcd.Kill();
        await etcd.RestartAsync();
        await store.TryCommitAsync([], [StoreWrite.Put("w/2", Bytes("2"))]);
        await store.TryCommitAsync([], [StoreWrite.Put("w/3", Bytes("3"))]);

        var seen = await watching;
        Assert.Equal(["w/1", "w/2", "w/3"], seen.Select(e => e.Entry.Key));
    }

    [Fact]
    public async Task ALeaseSurvivesAShortEtcdRestart()
    {
        await using var etcd = await EtcdServer.StartAsync();
        await using var store = Store(etcd.ClientUrl);
        await using var lease = await store.GrantLeaseAsync(TimeSpan.FromSeconds(6));
        await store.TryCommitAsync([], [StoreWrite.Put("alive/n1", Bytes(""), lease.Id)]);

        etcd.Kill();
        await etcd.RestartAsync();

        // Two TTLs after the restart the keepalive has reconnected, and the key and the lease are still there.
        var until = DateTime.UtcNow + TimeSpan.FromSeconds(12);
        while (DateTime.UtcNow < until)
        {
            Assert.False(lease.Lost.IsCompleted);
            Assert.NotNull(await store.GetAsync("alive/n1"));
            await Task.Delay(250);
        }
    }

    [Fact]
    public async Task ALeaseIsReportedLostWhenEtcdIsGoneLongerThanItsTtl()
    {
        await using var etcd = await EtcdServer.StartAsync();
        await using var store = Store(etcd.ClientUrl);
        await using var lease = await store.GrantLeaseAsync(TimeSpan.FromSeconds(2));
        var watch = Stopwatch.StartNew();

        etcd.Kill();

        await lease.Lost.WaitAsync(Deadline.Default);
        // Not before the lease could have lapsed: the last acknowledged keepalive was at most a third of a TTL ago.
        Assert.True(watch.Elapsed >= TimeSpan.FromSeconds(1), $"lost after {watch.Elapsed}");
    }

    [Fact]
    public async Task AKilledLeaseHolderLosesItsKeyAfterTheTtl()
    {
        const int ttl = 2;
        await using var etcd = await EtcdServer.StartAsync();
        await using var store = Store(etcd.ClientUrl);
        using var holder = StartLeaseHolder(etcd.ClientUrl, "alive/child", ttl);
        try
        {
            string? line = await holder.StandardOutput.ReadLineAsync().WaitAsync(Deadline.Default);
            if (line?.StartsWith("holding ", StringComparison.Ordinal) != true)
            {
                holder.Kill();
                Assert.Fail($"the child said '{line}': {await holder.StandardError.ReadToEndAsync()}");
            }

            var entry = await store.GetAsync("alive/child");
            Assert.NotNull(entry);
            Assert.NotEqual(0, entry.Value.Lease);

            // The key outlives several TTLs while the child keeps its lease alive...
            var until = DateTime.UtcNow + TimeSpan.FromSeconds(2 * ttl);
            while (DateTime.UtcNow < until)
            {
                Assert.NotNull(await store.GetAsync("alive/child"));
                await Task.Delay(200);
            }

            // ...and goes within a TTL (and etcd's expiry sweep) of the child's death.
            holder.Kill();
            await holder.WaitForExitAsync();
            var killed = Stopwatch.StartNew();
            await Hci.Testing.Deadline.WaitUntilAsync(
                async () => await store.GetAsync("alive/child") is null,
                $"the key of the killed child to go (TTL {ttl} s)",
                TimeSpan.FromSeconds(ttl + 10),
                every: TimeSpan.FromMilliseconds(50));
            Assert.True(killed.Elapsed >= TimeSpan.FromSeconds(ttl / 3.0), $"the key went {killed.Elapsed} after the kill, before the lease could lapse");
        }
        finally
        {
            if (!holder.HasExited)
            {
                holder.Kill();
                await holder.WaitForExitAsync();
            }
        }
    }

    [Fact]
    public void OptionsThatCannotWorkAreRefusedWithWhatToFix()
    {
        static string Refused(EtcdClusterStoreOptions o) => Assert.Throws<ArgumentException>(() => new EtcdClusterStore(o)).Message;

        Assert.Contains("at least one", Refused(new EtcdClusterStoreOptions()), StringComparison.Ordinal);
        Assert.Contains("http://HOST:PORT", Refused(new EtcdClusterStoreOptions { Endpoints = ["127.0.0.1:2379"] }), StringComparison.Ordinal);
        Assert.Contains("http://HOST:PORT", Refused(new EtcdClusterStoreOptions { Endpoints = ["http://127.0.0.1:2379/v3"] }), StringComparison.Ordinal);
        Assert.Contains("RequestTimeout", Refused(new EtcdClusterStoreOptions { Endpoints = ["http://127.0.0.1:2379"], RequestTimeout = TimeSpan.Zero }), StringComparison.Ordinal);
        Assert.Contains("KeyPrefix", Refused(new EtcdClusterStoreOptions { Endpoints = ["http://127.0.0.1:2379"], KeyPrefix = "a\0b" }), StringComparison.Ordinal);
    }

    [Fact]
    public void PrefixRangesEndJustAfterTheLastKeyWithThePrefix()
    {
        Assert.Equal("b"u8.ToArray(), Etcd.EtcdKeys.RangeEnd("a"u8));
        Assert.Equal(new byte[] { (byte)'a', 0x01 }, Etcd.EtcdKeys.RangeEnd([(byte)'a', 0x00]));
        Assert.Equal("b"u8.ToArray(), Etcd.EtcdKeys.RangeEnd([(byte)'a', 0xFF]));
        Assert.Equal(new byte[] { 0 }, Etcd.EtcdKeys.RangeEnd([0xFF, 0xFF]));
    }

    private static Process StartLeaseHolder(string endpoint, string key, int ttl)
    {
        // The test assembly is also the child's program (see Program.cs), run by the same dotnet host.
        string host = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } h ? h : "dotnet";
        var psi = new ProcessStartInfo(host)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(typeof(Program).Assembly.Location);
        psi.ArgumentList.Add("hold-lease");
        psi.ArgumentList.Add(endpoint);
        psi.ArgumentList.Add(key);
        psi.ArgumentList.Add(ttl.ToString(System.Globalization.CultureInfo.InvariantCulture));
        return Process.Start(psi)!;
    }
}
