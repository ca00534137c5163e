using System.Buffers.Binary;
using Hci.Core.Replication;
using Hci.Transport.Iscsi;
using Hci.Transport.Replication;
using static Hci.Testing.Deadline;
using static Hci.Transport.Tests.Replication.ReplicaTestKit;

namespace Hci.Transport.Tests.Replication;

/// <summary>
/// The node-to-node protocol end to end on loopback: every operation round trips with its data, checksums, results
/// and epochs; hundreds of requests in flight are answered out of order and each gets its own answer; a request that
/// outlives its timeout is answered Unavailable; a channel reconnects to a restarted server.
/// </summary>
public sealed class ReplicaProtocolTests
{
    private const int Block = ReplicaGeometry.BlockSize;

    [Fact]
    public async Task EveryOperationRoundTripsWithItsDataChecksumsResultsAndEpochs()
    {
        byte[] key = NewKey();
        var local = new CountingConnector(CreateLocalNode());
        await using var server = StartServer(local, key);
        using var connector = Connector(server, key);
        using var channel = connector.Open("node-b", reactor: null);
        WaitConnected(channel);
        using var io = new Io(8 * Block);

        // A never-written extent reads as zeros, unallocated.
        io.Data.Fill(0xEE);
        Assert.Equal(ReplicaStatus.Ok, Run(channel, io.Make(ReplicaOperation.Read, extent: 9)));
        Assert.False(io.Request.Allocated);
        Assert.True(io.Data.IndexOfAnyExcept((byte)0) < 0);

        // Write 8 blocks with their checksums, read them back with the stored checksums.
        Random.Shared.NextBytes(io.Data);
        byte[] written = io.Data.ToArray();
        var w = io.Make(ReplicaOperation.Write, offset: 16 * Block);
        w.Flags = Hci.Core.Blocks.BlockRequestFlags.ForceUnitAccess;
        Assert.Equal(ReplicaStatus.Ok, Run(channel, w));
        Assert.Equal(8 * Block, w.Result);
        io.Data.Clear();
        var r = io.Make(ReplicaOperation.Read, offset: 16 * Block);
        io.UseChecksums(r);
        Assert.Equal(ReplicaStatus.Ok, Run(channel, r));
        Assert.True(r.Allocated);
        Assert.True(io.Data.SequenceEqual(written));
        for (int i = 0; i < 8; i++)
        {
            Assert.Equal(IscsiDigest.Compute(written.AsSpan(i * Block, Block)), io.Sums[i]);
        }

        // ReadChecksums: the same checksums without the data.
        io.Sums.Clear();
        Assert.Equal(ReplicaStatus.Ok, Run(channel, io.Make(ReplicaOperation.ReadChecksums, offset: 16 * Block, length: 8 * Block)));
        Assert.Equal(IscsiDigest.Compute(written.AsSpan(7 * Block, Block)), io.Sums[7]);

        // Flush, list the extents, the dirty regions, mark clean.
        Assert.Equal(ReplicaStatus.Ok, Run(channel, io.Make(ReplicaOperation.Flush)));
        Assert.Equal(ReplicaStatus.Ok, Run(channel, io.Make(ReplicaOperation.ListExtents, length: Block)));
        Assert.Equal(1, io.Request.Result);
        Assert.Equal(3, BinaryPrimitives.ReadInt64LittleEndian(io.Data));
        Assert.Equal(ReplicaStatus.Ok, Run(channel, io.Make(ReplicaOperation.GetDirtyRegions, length: Block)));
        Assert.Equal(1, io.Request.Result);
        ulong dirty = BinaryPrimitives.ReadUInt64LittleEndian(io.Data[8..]);
        Assert.NotEqual(0UL, dirty);
        var clean = io.Make(ReplicaOperation.MarkClean);
        clean.Argument = dirty;
        Assert.Equal(ReplicaStatus.Ok, Run(channel, clean));
        Assert.Equal(ReplicaStatus.Ok, Run(channel, io.Make(ReplicaOperation.GetDirtyRegions, length: Block)));
        Assert.Equal(0, io.Request.Result);

        // Fence raises the epoch; an older one is refused with the store's.
        Assert.Equal(ReplicaStatus.Ok, Run(channel, io.Make(ReplicaOperation.Fence, epoch: 5)));
        Assert.Equal(ReplicaStatus.StaleEpoch, Run(channel, io.Make(ReplicaOperation.Write, epoch: 4)));
        Assert.Equal(5UL, io.Request.ObservedEpoch);

        // A range the store refuses comes back Invalid; the connection goes on.
        Assert.Equal(ReplicaStatus.Invalid, Run(channel, io.Make(ReplicaOperation.Read, offset: (4L << 20) - Block, epoch: 5)));
        Assert.Equal(ReplicaStatus.Invalid, Run(channel, io.Make(ReplicaOperation.Read, device: 999, epoch: 5)));

        // Drop the extent, then the volume.
        Assert.Equal(ReplicaStatus.Ok, Run(channel, io.Make(ReplicaOperation.DropExtent, epoch: 5)));
        Assert.Equal(ReplicaStatus.Ok, Run(channel, io.Make(ReplicaOperation.Read, offset: 16 * Block, epoch: 5)));
        Assert.False(io.Request.Allocated);
        Assert.Equal(ReplicaStatus.Ok, Run(channel, io.Make(ReplicaOperation.DropVolume, epoch: 5)));
        Assert.True(channel.IsConnected);
        Assert.Equal(0, channel.InFlight);
        Assert.Equal(16, local.Requests);
    }

    [Fact]
    public async Task ARequestTheWireCannotCarryIsAnsweredInvalidWithoutReachingTheServer()
    {
        byte[] key = NewKey();
        var local = new CountingConnector(CreateLocalNode());
        await using var server = StartServer(local, key);
        using var connector = Connector(server, key);
        using var channel = connector.Open("node-b", reactor: null);
        WaitConnected(channel);
        using var io = new Io(2 * Block);
        Assert.Equal(ReplicaStatus.Invalid, Run(channel, io.Make(ReplicaOperation.Read, offset: 512)));
        Assert.Equal(ReplicaStatus.Invalid, Run(channel, io.Make(ReplicaOperation.Write, length: Block + 1)));
        Assert.Equal(ReplicaStatus.Invalid, Run(channel, io.Make(ReplicaOperation.Read, extent: -1)));
        Assert.Equal(0, local.Requests);
        Assert.True(channel.IsConnected);
    }

    [Fact]
    public async Task FiveHundredRequestsInFlightAreAnsweredOutOfOrderEachWithItsOwnData()
    {
        byte[] key = NewKey();
        await using var server = StartServer(CreateLocalNode(), key, o => o.MaxInFlightPerConnection = 512);
        using var connector = Connector(server, key, o => o.MaxInFlight = 512);
        using var channel = connector.Open("node-b", reactor: null);
        WaitConnected(channel);
        const int Count = 500;
        var ios = Enumerable.Range(0, Count).Select(_ => new Io(Block)).ToArray();
        try
        {
            var recorder = new Recorder();
            for (int i = 0; i < Count; i++)
            {
                ios[i].Data.Fill((byte)i);
                BinaryPrimitives.WriteInt32LittleEndian(ios[i].Data, i);
                var w = ios[i].Make(ReplicaOperation.Write, extent: i % 7, offset: (long)(i / 7) * Block);
                w.Handler = recorder;
                w.UserTag = i;
                channel.Submit(w);
            }

            Assert.Equal(Count, channel.InFlight);
            WaitUntil(() =>
            {
                channel.Poll();
                return recorder.Count == Count;
            }, "500 writes answered");
            Assert.All(recorder.Order, r => Assert.Equal(ReplicaStatus.Ok, r.Status));
            Assert.NotEqual(Enumerable.Range(0, Count).Select(i => (long)i), recorder.Order.Select(r => r.UserTag)); // not in submission order

            recorder.Order.Clear();
            recorder.Count = 0;
            for (int i = 0; i < Count; i++)
            {
                ios[i].Data.Clear();
                var rd = ios[i].Make(ReplicaOperation.Read, extent: i % 7, offset: (long)(i / 7) * Block);
                rd.Handler = recorder;
                channel.Submit(rd);
            }

            WaitUntil(() =>
            {
                channel.Poll();
                return recorder.Count == Count;
            }, "500 reads answered");
            for (int i = 0; i < Count; i++)
            {
                Assert.Equal(ReplicaStatus.Ok, ios[i].Request.Status);
                Assert.Equal(i, BinaryPrimitives.ReadInt32LittleEndian(ios[i].Data));
                Assert.Equal((byte)i, ios[i].Data[Block - 1]);
            }
        }
        finally
        {
            foreach (var io in ios)
            {
                io.Dispose();
            }
        }
    }

    [Fact]
    public async Task ARequestThatOutlivesItsTimeoutIsAnsweredUnavailableAndTheChannelReconnects()
    {
        byte[] key = NewKey();
        var node = new MemoryReplicaNode();
        await using var server = StartServer(node, key);
        using var connector = Connector(server, key, o => o.RequestTimeout = TimeSpan.FromMilliseconds(300));
        using var channel = connector.Open("node-b", reactor: null);
        WaitConnected(channel);
        using var io = new Io(Block);
        node.Hold = true;
        var started = System.Diagnostics.Stopwatch.StartNew();
        Assert.Equal(ReplicaStatus.Unavailable, Run(channel, io.Make(ReplicaOperation.Write)));
        Assert.True(started.Elapsed >= TimeSpan.FromMilliseconds(300), $"answered after {started.ElapsedMilliseconds} ms");
        Assert.False(channel.IsConnected);
        Assert.Equal(ReplicaStatus.Unavailable, Run(channel, io.Make(ReplicaOperation.Write))); // while not connected
        node.Hold = false;
        WaitConnected(channel);
        Assert.Equal(ReplicaStatus.Ok, Run(channel, io.Make(ReplicaOperation.Write)));
    }

    [Fact]
    public async Task AChannelReconnectsToAServerThatRestartedOnTheSamePort()
    {
        byte[] key = NewKey();
        var node = CreateLocalNode();
        var server = StartServer(node, key);
        int port = server.LocalEndPoint.Port;
        using var connector = Connector(server, key);
        using var channel = connector.Open("node-b", reactor: null);
        WaitConnected(channel);
        using var io = new Io(Block);
        io.Data.Fill(0x5A);
        Assert.Equal(ReplicaStatus.Ok, Run(channel, io.Make(ReplicaOperation.Write)));
        await server.DisposeAsync();
        WaitUntil(() =>
        {
            channel.Poll();
            return !channel.IsConnected;
        }, "the channel to see the server go");
        Assert.Equal(ReplicaStatus.Unavailable, Run(channel, io.Make(ReplicaOperation.Read)));

        await using var again = StartServer(node, key, listen: $"127.0.0.1:{port}");
        WaitConnected(channel);
        io.Data.Clear();
        Assert.Equal(ReplicaStatus.Ok, Run(channel, io.Make(ReplicaOperation.Read)));
        Assert.Equal(0x5A, io.Data[100]);
    }

    [Fact]
    public async Task AWriteCorruptedOnTheWayIsAnsweredBadPayloadAndNotApplied()
    {
        byte[] key = NewKey();
        var local = new CountingConnector(CreateLocalNode());
        await using var server = StartServer(local, key);
        using var connector = Connector(server, key);
        using var channel = connector.Open("node-b", reactor: null);
        WaitConnected(channel);
        using var io = new Io(2 * Block);
        io.Data.Fill(1);
        var w = io.Make(ReplicaOperation.Write);
        io.Sums[0] = 12345; // the sender's checksum does not match its data: as if a bit flipped on the wire
        io.Sums[1] = IscsiDigest.Compute(io.Data[Block..]);
        io.UseChecksums(w);
        Assert.Equal(ReplicaStatus.BadPayload, Run(channel, w));
        Assert.Equal(0, local.Requests);
        Assert.Equal(ReplicaStatus.Ok, Run(channel, io.Make(ReplicaOperation.Read)));
        Assert.False(io.Request.Allocated);
        Assert.True(channel.IsConnected);
    }
}
