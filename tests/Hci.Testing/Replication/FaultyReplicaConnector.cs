using System.Collections.Concurrent;
using Hci.Core.Blocks;
using Hci.Core.Reactors;
using Hci.Core.Replication;

namespace Hci.Testing.Replication;

/// <summary>
/// A fault injector between a replicated volume and the nodes: each node can be made unreachable (its requests are
/// answered <see cref="ReplicaStatus.Unavailable"/> without reaching it, as after a timeout on a dead link), and
/// requests are counted per node and operation, and a node's background requests (resync, rebuild and scrub copies)
/// can be held back unanswered to stall a copy at a known point. Everything else passes to the real connector.
/// </summary>
public sealed class FaultyReplicaConnector(IReplicaConnector inner) : IReplicaConnector
{
    private readonly ConcurrentDictionary<string, NodeFaults> _nodes = new();

    /// <summary>Makes a node unreachable, or reachable again.</summary>
    public void SetDown(string nodeId, bool down) => Faults(nodeId).Down = down;

    /// <summary>Holds a node's <see cref="IoClass.Background"/> requests at the channel, unsent and unanswered, until
    /// released (they are sent at the channel's next poll after that).</summary>
    public void HoldBackground(string nodeId, bool hold) => Faults(nodeId).HoldBackground = hold;

    /// <summary>Background requests held for a node now.</summary>
    public int HeldBackground(string nodeId) => Volatile.Read(ref Faults(nodeId).Held);

    /// <summary>Requests that reached a node (not counting those answered unreachable).</summary>
    public long Delivered(string nodeId, ReplicaOperation operation) => Interlocked.Read(ref Faults(nodeId).Counts[(int)operation]);

    /// <summary>Bytes that reached a node in requests of an operation.</summary>
    public long DeliveredBytes(string nodeId, ReplicaOperation operation) => Interlocked.Read(ref Faults(nodeId).Bytes[(int)operation]);

    /// <inheritdoc/>
    public ReplicaChannel Open(string nodeId, Reactor? reactor) => new Channel(inner.Open(nodeId, reactor), Faults(nodeId));

    private NodeFaults Faults(string nodeId) => _nodes.GetOrAdd(nodeId, _ => new NodeFaults());

    private sealed class NodeFaults
    {
        public volatile bool Down;
        public volatile bool HoldBackground;
        public int Held;
        public readonly long[] Counts = new long[16];
        public readonly long[] Bytes = new long[16];
    }

    private sealed class Channel(ReplicaChannel inner, NodeFaults faults) : ReplicaChannel
    {
        private readonly Queue<ReplicaRequest> _refused = new();
        private readonly Queue<ReplicaRequest> _held = new();

        public override string NodeId => inner.NodeId;

        public override bool IsConnected => !faults.Down && inner.IsConnected;

        public override int InFlight => inner.InFlight + _refused.Count + _held.Count;

        public override void Submit(ReplicaRequest request)
        {
            if (faults.Down)
            {
                _refused.Enqueue(request);
                return;
            }

            if (faults.HoldBackground && request.Class == IoClass.Background)
            {
                _held.Enqueue(request);
                Interlocked.Increment(ref faults.Held);
                return;
            }

            Send(request);
        }

        private void Send(ReplicaRequest request)
        {
            Interlocked.Increment(ref faults.Counts[(int)request.Operation]);
            Interlocked.Add(ref faults.Bytes[(int)request.Operation], request.Length);
            inner.Submit(request);
        }

        public override int Poll()
        {
            while (!faults.HoldBackground && _held.TryDequeue(out var held))
            {
                Interlocked.Decrement(ref faults.Held);
                Send(held);
            }

            int done = 0;
            while (_refused.TryDequeue(out var request))
            {
                request.Complete(ReplicaStatus.Unavailable, 0);
                done++;
            }

            return done + inner.Poll();
        }

        protected override void Dispose(bool disposing)
        {
            Poll();
            inner.Dispose();
        }
    }
}
