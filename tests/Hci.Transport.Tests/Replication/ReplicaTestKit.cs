using System.Runtime.InteropServices;
using System.Security.Cryptography;
using Hci.Core.Reactors;
using Hci.Core.Replication;
using Hci.Transport.Replication;
using static Hci.Testing.Deadline;

namespace Hci.Transport.Tests.Replication;

/// <summary>What the protocol tests share: the local side behind a server, a server and connector on loopback, and
/// a way to run one request on a channel its test thread polls.</summary>
internal static unsafe class ReplicaTestKit
{
    /// <summary>The local side every server in these tests serves. The one place to switch to the real replica store
    /// (a <c>ReplicaNode</c> over <c>ReplicaStore</c>s on memory devices) once it is merged.</summary>
    public static IReplicaConnector CreateLocalNode() => new MemoryReplicaNode();

    public static byte[] NewKey() => RandomNumberGenerator.GetBytes(32);

    public static ReplicaServer StartServer(IReplicaConnector local, byte[] key, Action<ReplicaServerOptions>? configure = null, string listen = "127.0.0.1:0")
    {
        var options = new ReplicaServerOptions { NodeId = "node-b", Listen = listen, Key = key, Reactors = 1 };
        configure?.Invoke(options);
        var server = new ReplicaServer(options, local);
        server.Start();
        return server;
    }

    public static RemoteReplicaConnector Connector(ReplicaServer server, byte[] key, Action<RemoteReplicaConnectorOptions>? configure = null)
    {
        var options = new RemoteReplicaConnectorOptions { NodeId = "node-a", Key = key };
        options.Addresses["node-b"] = $"127.0.0.1:{server.LocalEndPoint.Port}";
        configure?.Invoke(options);
        return new RemoteReplicaConnector(options);
    }

    /// <summary>Polls until the channel is connected.</summary>
    public static void WaitConnected(ReplicaChannel channel) => WaitUntil(() =>
    {
        channel.Poll();
        return channel.IsConnected;
    }, "the channel to connect");

    /// <summary>Submits and polls until the answer.</summary>
    public static ReplicaStatus Run(ReplicaChannel channel, ReplicaRequest request)
    {
        var handler = new Recorder();
        request.Handler = handler;
        channel.Submit(request);
        Assert.Equal(0, handler.Count); // Submit never answers
        WaitUntil(() =>
        {
            channel.Poll();
            return handler.Count > 0;
        }, $"the answer to {request.Operation}");
        Assert.Equal(1, handler.Count);
        return request.Status;
    }

    /// <summary>A request on native memory it owns.</summary>
    public sealed class Io : IDisposable
    {
        public Io(int bytes)
        {
            Length = bytes;
            Buffer = (byte*)NativeMemory.AlignedAlloc((nuint)Math.Max(bytes, 1), 4096);
            Checksums = (uint*)NativeMemory.AllocZeroed(256, 4);
            Request = new ReplicaRequest(1);
        }

        public ReplicaRequest Request { get; }

        public byte* Buffer { get; }

        public uint* Checksums { get; }

        public int Length { get; }

        public Span<byte> Data => new(Buffer, Length);

        /// <summary>The checksum array, for tests that are not unsafe.</summary>
        public Span<uint> Sums => new(Checksums, 256);

        /// <summary>Makes the request carry (writes) or receive (reads) the checksum array.</summary>
        public void UseChecksums(ReplicaRequest r) => r.Checksums = Checksums;

        public ReplicaRequest Make(ReplicaOperation op, ulong volume = 7, long extent = 3, long offset = 0, int length = -1, ulong epoch = 1, int device = 0)
        {
            var r = Request;
            r.Reset();
            r.Operation = op;
            r.VolumeId = volume;
            r.Extent = extent;
            r.Offset = offset;
            r.Epoch = epoch;
            r.Device = device;
            length = length < 0 ? Length : length;
            if (op is ReplicaOperation.Read or ReplicaOperation.Write or ReplicaOperation.ListExtents or ReplicaOperation.GetDirtyRegions)
            {
                if (length > 0)
                {
                    r.AddSegment(Buffer, length);
                }
            }
            else
            {
                r.Length = op == ReplicaOperation.ReadChecksums ? length : 0;
            }

            if (op == ReplicaOperation.ReadChecksums)
            {
                r.Checksums = Checksums;
            }

            return r;
        }

        public void Dispose()
        {
            Request.Dispose();
            NativeMemory.AlignedFree(Buffer);
            NativeMemory.Free(Checksums);
        }
    }

    public sealed class Recorder : IReplicaCompletionHandler
    {
        public int Count;
        public readonly List<ReplicaRequest> Order = [];

        public void OnReplicaCompleted(ReplicaRequest request)
        {
            Count++;
            Order.Add(request);
        }
    }

    /// <summary>Counts the requests that reach the local side, whatever it is.</summary>
    public sealed class CountingConnector(IReplicaConnector inner) : IReplicaConnector
    {
        private long _count;

        public long Requests => Interlocked.Read(ref _count);

        public ReplicaChannel Open(string nodeId, Reactor? reactor) => new Counting(this, inner.Open(nodeId, reactor));

        private sealed class Counting(CountingConnector owner, ReplicaChannel inner) : ReplicaChannel
        {
            public override string NodeId => inner.NodeId;

            public override bool IsConnected => inner.IsConnected;

            public override int InFlight => inner.InFlight;

            public override void Submit(ReplicaRequest request)
            {
                Interlocked.Increment(ref owner._count);
                inner.Submit(request);
            }

            public override int Poll() => inner.Poll();

            protected override void Dispose(bool disposing) => inner.Dispose();
        }
    }
}
