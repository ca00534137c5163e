using Hci.Core.Cluster;
using Hci.Core.Replication;

namespace Hci.Core.Tests.Cluster;

/// <summary>
/// The scrub requests in the cluster store (<c>hci/scrub/&lt;volume&gt;</c>): refused for a detached volume, joined
/// while one is outstanding, and written only by the node that runs them.
/// </summary>
public sealed class ScrubRecordTests : IDisposable
{
    private readonly TempDir _dir = new();

    [Fact]
    public async Task AScrubOfADetachedVolumeIsRefusedWithWhatToDo()
    {
        await using var store = LocalClusterStore.Open(_dir.Path);
        var catalog = await CatalogWithVolumeAsync(store);
        await catalog.DetachAsync("v");

        var e = await Assert.ThrowsAsync<ClusterCatalogException>(() => catalog.RequestScrubAsync("v"));
        Assert.Contains("hci volume attach v --node", e.Message, StringComparison.Ordinal);
        Assert.Null(await catalog.GetScrubAsync("v"));
    }

    [Fact]
    public async Task ASecondRequestWhileOneIsOutstandingJoinsItAndADoneOneIsReplaced()
    {
        await using var store = LocalClusterStore.Open(_dir.Path);
        var catalog = await CatalogWithVolumeAsync(store);

        var first = await catalog.RequestScrubAsync("v");
        Assert.Equal(ScrubState.Requested, first.State);
        Assert.Equal(first.RequestId, (await catalog.RequestScrubAsync("v")).RequestId);

        var running = first with { State = ScrubState.Running, Node = "n1" };
        Assert.True(await catalog.UpdateScrubAsync(running, takeOver: true));
        Assert.Equal(first.RequestId, (await catalog.RequestScrubAsync("v")).RequestId);

        var result = new ScrubResult { Volume = "v", ExtentsChecked = 2, BytesChecked = 3 << 23, BadBlocks = 1, RepairedBlocks = 1, Findings = [new ScrubFinding(1, 4096, "n1", 0, ScrubFindingKind.Bad, true)] };
        Assert.True(await catalog.UpdateScrubAsync(running.WithResult("n1", result, DateTimeOffset.UtcNow)));
        var done = await catalog.GetScrubAsync("v");
        Assert.NotNull(done);
        Assert.Equal(ScrubState.Done, done.State);
        Assert.True(done.Repaired);
        Assert.Equal(result.Findings, done.Findings);
        Assert.Contains("\"kind\": \"Bad\"", ClusterCatalog.ToJson(done), StringComparison.Ordinal);

        var next = await catalog.RequestScrubAsync("v");
        Assert.NotEqual(first.RequestId, next.RequestId);
        Assert.Equal(ScrubState.Requested, next.State);
        Assert.Single(await catalog.ListScrubsAsync());
    }

    [Fact]
    public async Task ANodeThatNoLongerRunsARequestCannotOverwriteItsRecord()
    {
        await using var store = LocalClusterStore.Open(_dir.Path);
        var catalog = await CatalogWithVolumeAsync(store);
        var request = await catalog.RequestScrubAsync("v");
        var byOld = request with { State = ScrubState.Running, Node = "n1" };
        Assert.True(await catalog.UpdateScrubAsync(byOld, takeOver: true));

        // The volume moved: the new owner takes the request over; the old one, fenced, fails its scrub and may not
        // write that over the new owner's run.
        var byNew = request with { State = ScrubState.Running, Node = "n2" };
        Assert.True(await catalog.UpdateScrubAsync(byNew, takeOver: true));
        Assert.False(await catalog.UpdateScrubAsync(byOld with { State = ScrubState.Failed, Error = "fenced" }));
        Assert.Equal("n2", (await catalog.GetScrubAsync("v"))!.Node);

        // Nor may anyone write into a request that was replaced.
        Assert.False(await catalog.UpdateScrubAsync(byNew with { RequestId = "another" }));
    }

    public void Dispose() => _dir.Dispose();

    private static async Task<ClusterCatalog> CatalogWithVolumeAsync(IClusterStore store)
    {
        var catalog = new ClusterCatalog(store);
        foreach (string id in new[] { "n1", "n2" })
        {
            await catalog.RegisterNodeAsync(new NodeRecord { Id = id, Address = "127.0.0.1:7400", Domain = $"host/{id}", Devices = [new DeviceRecord { Index = 0, Capacity = 1L << 30, Weight = 1 }] });
        }

        await catalog.CreateVolumeAsync("v", 64L << 20, replicas: 2);
        await catalog.AttachAsync("v", "n1");
        return catalog;
    }
}
