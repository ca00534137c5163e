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

    /// <summary>Holds a node's flushes at the channel like <see cref="HoldBackground"/>; a held request released while
    /// the node is down (<see cref="SetDown"/>) is answered unreachable.</summary>
    public void HoldFlushes(string nodeId, bool hold) => Faults(nodeId).HoldFlushes = hold;

    /// <summary>Requests held for a node now (background and flushes).</summary>
    public int Held(string nodeId) => Volatile.Read(ref Faults(nodeId).Held);

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
        public volatile bool HoldFlushes;
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

            if (Holds(request))
            {
                _held.Enqueue(request);
                Interlocked.Increment(ref faults.Held);
                return;
            }

            Send(request);
        }

        private bool Holds(ReplicaRequest request)
            => (faults.HoldBackground && request.Class == IoClass.Background) || (faults.HoldFlushes && request.Operation == ReplicaOperation.Flush);

        private void Send(ReplicaRequest request)
        {
            Interlocked.Increment(ref faults.Counts[(int)request.Operation]);
            Interlocked.Add(ref faults.Bytes[(int)request.Operation], request.Length);
            inner.Submit(request);
        }

        public override int Poll()
        {
            while (_held.TryPeek(out var held) && !Holds(held))
            {
                _held.Dequeue();
                Interlocked.Decrement(ref faults.Held);
                if (faults.Down)
                {
                    _refused.Enqueue(held);
                }
                else
                {
                    Send(held);
                }
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
