using Hci.Core.Reactors;
using Hci.Transport.Replication;
using Xunit.Abstractions;
using static Hci.Transport.Tests.Replication.ReplicaTestKit;

namespace Hci.Transport.Tests.Replication;

/// <summary>
/// Steady 4 KiB writes and reads over the protocol allocate nothing per I/O, on the client's reactor and on the
/// server's, once warm; and the loopback figures the replication bench builds on (QD1 round trip, QD32 IOPS).
/// </summary>
public sealed class ReplicaAllocationTests(ITestOutputHelper output)
{
    [Fact]
    public async Task SteadyWritesAndReadsAllocateNothingOnTheClientOrTheServerReactor()
    {
        byte[] key = NewKey();
        await using var server = StartServer(CreateLocalNode(), key);
        using var connector = Connector(server, key);
        using var reactor = new Reactor(new ReactorOptions { Name = "hci-replica-alloc-0" });
        using var load = await ReplicaLoad.StartAsync(reactor, connector, depth: 16, mixed: true);
        await Hci.Testing.Deadline.WaitUntilAsync(() => load.Completed > 20_000, "the warm-up");
        long clientWarm = IscsiDataPathTests.ReactorAllocatedBytes("hci-replica-alloc");
        long serverWarm = IscsiDataPathTests.ReactorAllocatedBytes(server.ReactorName);
        long from = load.Completed;
        await Hci.Testing.Deadline.WaitUntilAsync(() => load.Completed > from + 50_000, "50,000 more requests");
        long clientEnd = IscsiDataPathTests.ReactorAllocatedBytes("hci-replica-alloc");
        long serverEnd = IscsiDataPathTests.ReactorAllocatedBytes(server.ReactorName);
        long requests = load.Completed - from;
        await load.StopAsync(reactor);
        output.WriteLine($"{requests} requests: client reactor +{clientEnd - clientWarm} B, server reactor +{serverEnd - serverWarm} B");
        Assert.Equal(0, load.Failed);
        Assert.Equal(0, clientEnd - clientWarm);
        Assert.Equal(0, serverEnd - serverWarm);
    }

    [Fact]
    public async Task LoopbackRoundTripAndIopsAreMeasured()
    {
        var qd1 = await ReplicaLoad.MeasureAsync(1, TimeSpan.FromSeconds(1));
        var qd32 = await ReplicaLoad.MeasureAsync(32, TimeSpan.FromSeconds(1));
        output.WriteLine($"4 KiB write over loopback, in-memory store: QD1 {qd1.MeanMicroseconds:0.0} us per round trip ({qd1.Iops:0} IOPS); QD32 {qd32.Iops:0} IOPS");
        Assert.True(qd1.Iops > 0 && qd32.Iops > 0);
    }
}
