using Hci.Core.Blocks;
using Hci.Core.Devices;
using Hci.Core.Reactors;
using Hci.Core.Replication;
using Hci.Core.Storage;

namespace Hci.Core.Tests.Storage;

public sealed unsafe class ReplicaNodeTests
{
    private const int Block = StoreHarness.Block;

    [Fact]
    public void TheLocalChannelRoutesByDeviceAndAnswersOnlyFromPoll()
    {
        using var d0 = new MemoryBlockDevice(16L << 20);
        using var d1 = new MemoryBlockDevice(16L << 20);
        using var node = Node("n1", [d0, d1], new ReplicaStoreOptions { ExtentSize = 1 << 20, MaxVolumes = 8 });
        Assert.Equal(2, node.Stores.Count);
        using var channel = node.Open("n1", reactor: null);
        Assert.Equal("n1", channel.NodeId);
        Assert.True(channel.IsConnected);
        using var buffer = new Hci.Core.Buffers.AlignedBuffer(Block);
        var answers = new List<ReplicaStatus>();
        var handler = new Handler(answers);
        using var write = new ReplicaRequest(1) { Handler = handler, Operation = ReplicaOperation.Write, VolumeId = 1, Epoch = 1, Device = 1 };
        Pattern.Fill(buffer.Span, 1, 0, 0, 7);
        write.AddSegment(buffer.Pointer, Block);
        using var bad = new ReplicaRequest(1) { Handler = handler, Operation = ReplicaOperation.Fence, VolumeId = 1, Epoch = 1, Device = 2 };
        using var negative = new ReplicaRequest(1) { Handler = handler, Operation = ReplicaOperation.Fence, VolumeId = 1, Epoch = 1, Device = -1 };
        channel.Submit(write);
        channel.Submit(bad);
        channel.Submit(negative);
        Assert.Empty(answers);
        Assert.Equal(3, channel.InFlight);
        Deadline.WaitUntil(() => { channel.Poll(); return answers.Count == 3; }, "three answers");
        Assert.Equal(2, answers.Count(a => a == ReplicaStatus.Invalid));
        Assert.Contains(ReplicaStatus.Ok, answers);
        Assert.Equal(0, channel.InFlight);
        Assert.Equal(1, node.Stores[1].AllocatedExtents);
        Assert.Equal(0, node.Stores[0].AllocatedExtents);
    }

    [Fact]
    public void ReopeningANodeFindsItsStoresAndForeignDataIsNeverFormatted()
    {
        using var d0 = new MemoryBlockDevice(16L << 20);
        Guid id;
        using (var node = Node("n1", [d0]))
        {
            id = node.Stores[0].StoreId;
        }

        using (var node = Node("n1", [d0]))
        {
            Assert.Equal(id, node.Stores[0].StoreId);
        }

        using var foreign = new MemoryBlockDevice(16L << 20);
        using (var buffer = new Hci.Core.Buffers.AlignedBuffer(Block))
        {
            buffer.Span.Fill(0x5A);
            Wait(foreign.WriteAsync(0, buffer.Memory).AsTask());
        }

        Assert.Throws<InvalidDataException>(() => Node("n1", [foreign]));
    }

    [Fact]
    public void OtherNodesGoThroughTheRemoteConnectorOrFailClearly()
    {
        using var d0 = new MemoryBlockDevice(16L << 20);
        var remote = new FakeConnector();
        using (var node = Node("n1", [d0], remote: remote))
        {
            using var channel = node.Open("n2", null);
            Assert.Equal("n2", remote.Asked);
        }

        using (var node = Node("n1", [d0]))
        {
            var e = Assert.Throws<InvalidOperationException>(() => node.Open("n2", null));
            Assert.Contains("no connector to other nodes", e.Message);
        }
    }

    [Fact]
    public void AChannelOpenedOnAReactorIsAnsweredByTheReactor()
    {
        using var d0 = new MemoryBlockDevice(16L << 20);
        using var node = Node("n1", [d0]);
        using var reactor = new Reactor();
        var done = new TaskCompletionSource<ReplicaStatus>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var buffer = new Hci.Core.Buffers.AlignedBuffer(Block);
        using var request = new ReplicaRequest(1) { Operation = ReplicaOperation.Write, VolumeId = 3, Epoch = 2, Flags = BlockRequestFlags.ForceUnitAccess };
        request.AddSegment(buffer.Pointer, Block);
        request.Handler = new Handler(null, done);
        ReplicaChannel? channel = null;
        Wait(reactor.InvokeAsync(() =>
        {
            channel = node.Open("n1", reactor);
            channel.Submit(request);
        }));
        Assert.Equal(ReplicaStatus.Ok, Wait(done.Task.WaitAsync(Deadline.Default)));
        Wait(reactor.InvokeAsync(() => channel!.Dispose()));
        Assert.Equal(2UL, node.Stores[0].GetEpoch(3));
    }

    private static ReplicaNode Node(string id, BlockDevice[] devices, ReplicaStoreOptions? options = null, IReplicaConnector? remote = null)
        => Wait(ReplicaNode.OpenAsync(id, devices, options, remote));

    // The channels here belong to the test's thread: it stays on it (no await between opening and using them).
    private static T Wait<T>(Task<T> task) => task.GetAwaiter().GetResult();

    private static void Wait(Task task) => task.GetAwaiter().GetResult();

    private sealed class Handler(List<ReplicaStatus>? answers, TaskCompletionSource<ReplicaStatus>? done = null) : IReplicaCompletionHandler
    {
        public void OnReplicaCompleted(ReplicaRequest request)
        {
            answers?.Add(request.Status);
            done?.TrySetResult(request.Status);
        }
    }

    private sealed class FakeConnector : IReplicaConnector
    {
        public string? Asked { get; private set; }

        public ReplicaChannel Open(string nodeId, Reactor? reactor)
        {
            Asked = nodeId;
            return new NullChannel(nodeId);
        }
    }

    private sealed class NullChannel(string nodeId) : ReplicaChannel
    {
        public override string NodeId => nodeId;

        public override bool IsConnected => false;

        public override int InFlight => 0;

        public override void Submit(ReplicaRequest request) => throw new NotSupportedException();

        public override int Poll() => 0;

        protected override void Dispose(bool disposing)
        {
        }
    }
}
