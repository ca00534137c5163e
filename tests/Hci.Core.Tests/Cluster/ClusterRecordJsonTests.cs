using System.Text;
using Hci.Core.Cluster;

namespace Hci.Core.Tests.Cluster;

public sealed class ClusterRecordJsonTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task RecordsAreStoredAsTheDocumentedJson()
    {
        await using var store = LocalClusterStore.Open(_dir.Path);
        var catalog = new ClusterCatalog(store);
        await catalog.RegisterNodeAsync(new NodeRecord { Id = "n1", Address = "127.0.0.1:7401", Domain = "rack1/host1", Devices = [new DeviceRecord { Index = 0, Capacity = 1L << 30, Weight = 1 }] });
        var volume = await catalog.CreateVolumeAsync("v", 1L << 30, 1, domainLevel: FailureDomainLevel.Host);
        volume = await catalog.AttachAsync("v", "n1");
        await catalog.AllocateExtentAsync(volume, 12);
        await catalog.MarkReplicaStateAsync("v", 12, "n1", 0, ReplicaState.OutOfSync, volume.Epoch);

        string Json(string key) => Encoding.UTF8.GetString(store.GetAsync(key).AsTask().Result!.Value.Value.Span);

        Assert.Equal("""{"index":12,"replicas":[{"node":"n1","device":0,"state":"out-of-sync"}]}""", Json("hci/extents/1/000000000012"));
        string volumeJson = Json("hci/volumes/v");
        Assert.Contains("\"name\":\"v\",\"id\":1,\"size\":1073741824,\"replicas\":1,\"minInSync\":1,\"extentSize\":4194304,\"domainLevel\":\"host\",\"owner\":\"n1\",\"epoch\":2", volumeJson);
        Assert.DoesNotContain("extentCount", volumeJson);
        Assert.Equal("""{"id":"n1","address":"127.0.0.1:7401","domain":"rack1/host1","devices":[{"index":0,"capacity":1073741824,"weight":1}]}""", Json("hci/nodes/n1"));
        Assert.Equal("2", Json("hci/next-volume-id"));
    }
}
