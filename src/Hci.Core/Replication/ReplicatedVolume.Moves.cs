using System.Buffers.Binary;
using System.Diagnostics.Metrics;
using Hci.Core.Blocks;
using Hci.Core.Cluster;

namespace Hci.Core.Replication;

// Replica moves (rebuild after a lost node, rebalance, drain): an extent's replica is replaced by a new one while the
// volume serves. The new replica joins the record out of sync (it missed everything), is copied in full from in-sync
// replicas by the resync machinery (Background I/O, the extent's writes held at each region and at the switch), is
// marked in sync, and only then does the replaced replica leave the record and its slot get freed on its store.
public sealed partial class ReplicatedVolume
{
    private static readonly Counter<long> s_rebuildBytes = s_meter.CreateCounter<long>("hci.replication.rebuild_bytes", "By", "Bytes of extents copied into new replicas by replica moves (rebuild, rebalance).");
    private static readonly Counter<long> s_rebuildReplicas = s_meter.CreateCounter<long>("hci.replication.rebuild_replicas", "{replica}", "Extent replicas replaced by a new, in-sync one (rebuild, rebalance).");
    private static readonly Counter<long> s_rebuildFailures = s_meter.CreateCounter<long>("hci.replication.rebuild_failures", "{replica}", "Replica moves that failed and were rolled back (the replaced replica stays).");

    private long _movedReplicas;
    private long _movedBytes;

    /// <summary>Extent replicas this owner replaced by new in-sync ones so far (rebuild, rebalance).</summary>
    public long MovedReplicas => Interlocked.Read(ref _movedReplicas);

    // A detach has begun: new moves are refused, and those in flight are being cancelled and waited for.
    internal bool MovesClosed => _moves.IsClosed;

    /// <summary>Bytes of extents copied into new replicas by replica moves so far.</summary>
    public long MovedBytes => Interlocked.Read(ref _movedBytes);

    /// <summary>
    /// Replaces one replica of an extent by a new one while the volume serves: the new replica joins the extent's
    /// record out of sync, is copied in full from in-sync replicas (never from an out-of-sync one) as
    /// <see cref="Hci.Core.Blocks.IoClass.Background"/> I/O with the extent's writes held at each region copy and at
    /// the switch, is marked in sync, and only then does <paramref name="replaced"/> leave the record; its slot is
    /// then freed on its store (<see cref="ReplicaOperation.DropExtent"/>) when that store answers. A detach
    /// (<see cref="DetachAsync"/>) cancels the moves in flight and waits for their roll-back, and refuses new ones.
    /// </summary>
    /// <param name="extent">The extent's index.</param>
    /// <param name="replaced">The replica that goes (its node and device; the state is ignored).</param>
    /// <param name="replacement">The replica that comes (its node and device; the state is ignored).</param>
    /// <param name="cancellationToken">Cancels the move (a move cancelled before the switch is rolled back).</param>
    /// <returns>True when the replica was replaced; false when there was nothing to do (the extent is not allocated,
    /// or <paramref name="replaced"/> is not one of its replicas any more).</returns>
    /// <exception cref="ReplicationException">The move failed (no in-sync replica to copy from answered, the new
    /// replica refused a write, the cluster store refused the change): the new replica was taken out of the record
    /// again and <paramref name="replaced"/> stays. Also when the volume is detaching.</exception>
    public async Task<bool> ReplaceReplicaAsync(long extent, ReplicaTarget replaced, ReplicaTarget replacement, CancellationToken cancellationToken = default)
    {
        if ((ulong)extent >= (ulong)_extents.Length)
        {
            throw new ArgumentOutOfRangeException(nameof(extent), extent, $"Volume '{Name}' has {_extents.Length} extents.");
        }

        if (replaced.NodeId == replacement.NodeId && replaced.Device == replacement.Device)
        {
            throw new ArgumentException($"Volume '{Name}', extent {extent}: a replica cannot replace itself ({replaced.NodeId}/{replaced.Device}).", nameof(replacement));
        }

        if (IsFenced)
        {
            throw new ReplicationException($"Volume '{Name}' was fenced by a newer owner: replica moves are that owner's to make.");
        }

        var state = TryGetExtent(extent);
        if (state?.View == null)
        {
            return false;
        }

        if (!_moves.TryEnter())
        {
            throw new ReplicationException($"Volume '{Name}' is detaching: replica moves are the next owner's to make.");
        }

        try
        {
            return await MoveAsync(extent, state, replaced, replacement, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _moves.Exit();
        }
    }

    private async Task<bool> MoveAsync(long extent, ExtentState state, ReplicaTarget replaced, ReplicaTarget replacement, CancellationToken cancellationToken)
    {
        if (Interlocked.CompareExchange(ref state.Moving, 1, 0) != 0)
        {
            throw new ReplicationException($"Volume '{Name}', extent {extent}: another replica move is in progress; try again when it is done.");
        }

        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _stop.Token);
        var token = linked.Token;
        try
        {
            // 1. The new replica joins the record out of sync, and the data path's view with it: from now on every
            // write records the regions it missed there (its Missed bits are all set: it is copied in full).
            int added = -1;
            bool present = false;
            bool joined = await WithWritesHeldAsync(state, async () =>
            {
                var view = state.View!;
                if (IndexOf(view, replaced) < 0)
                {
                    return true;
                }

                present = true;
                added = IndexOf(view, replacement);
                if (added >= 0)
                {
                    return true; // an earlier move got this far: copy and finish it
                }

                if (view.Replicas.Length >= MaxReplicas(_spec))
                {
                    throw new ReplicationException($"Volume '{Name}', extent {extent}: already {view.Replicas.Length} replicas, the most a set holds.");
                }

                await WaitForMarksAsync(state).ConfigureAwait(false);
                var replicas = new ReplicaTarget[view.Replicas.Length + 1];
                view.Replicas.CopyTo(replicas, 0);
                added = view.Replicas.Length;
                replicas[added] = replacement with { State = ReplicaState.OutOfSync };
                ulong version = await _control.SetReplicasAsync(extent, replicas, token).ConfigureAwait(false);
                RaiseStateVersion(version);
                lock (state)
                {
                    Volatile.Write(ref state.Missed[added], ulong.MaxValue);
                    state.Marking[added] = null;
                    state.View = new ExtentView(replicas, LocalNodeId);
                }

                lock (_lock)
                {
                    RebuildFlushTargets();
                }

                return true;
            }, token).ConfigureAwait(false);
            if (!joined)
            {
                throw new ReplicationException($"Volume '{Name}', extent {extent}: its writes did not drain within 30 s, so the new replica {replacement.NodeId}/{replacement.Device} could not join.");
            }

            if (!present)
            {
                return false;
            }

            ReplicationLog.MoveStarted(Log.Logger, Name, extent, replaced.NodeId, replaced.Device, replacement.NodeId, replacement.Device);

            // 2. Copy it from in-sync replicas (resync with everything missed) and mark it in sync at the switch.
            if (state.View!.Replicas[added].State != ReplicaState.InSync)
            {
                Volatile.Write(ref state.Missed[added], ulong.MaxValue);
                if (!await ResyncExtentAsync(extent, state, added, token).ConfigureAwait(false))
                {
                    token.ThrowIfCancellationRequested();
                    throw new ReplicationException($"Volume '{Name}', extent {extent}: copying to the new replica {replacement.NodeId}/{replacement.Device} failed (no in-sync replica answered, or the new one refused a write).");
                }
            }

            // 3. The replaced replica leaves the record (its replacement is in sync now), then its slot is freed.
            bool left = await WithWritesHeldAsync(state, async () =>
            {
                var view = state.View!;
                int old = IndexOf(view, replaced);
                int now = IndexOf(view, replacement);
                if (now < 0 || view.Replicas[now].State != ReplicaState.InSync)
                {
                    return false; // it went out of sync again after the switch (a failed write): the move failed
                }

                if (old < 0)
                {
                    return true;
                }

                await WaitForMarksAsync(state).ConfigureAwait(false);
                await RemoveAtAsync(extent, state, old, token).ConfigureAwait(false);
                return true;
            }, token).ConfigureAwait(false);
            if (!left)
            {
                throw new ReplicationException($"Volume '{Name}', extent {extent}: the new replica {replacement.NodeId}/{replacement.Device} did not stay in sync, so {replaced.NodeId}/{replaced.Device} was kept.");
            }

            _ = DropSlotAsync(extent, replaced);
            Interlocked.Increment(ref _movedReplicas);
            Interlocked.Add(ref _movedBytes, ExtentSize);
            s_rebuildReplicas.Add(1, _tag);
            s_rebuildBytes.Add(ExtentSize, _tag);
            ReplicationLog.Moved(Log.Logger, Name, extent, replaced.NodeId, replaced.Device, replacement.NodeId, replacement.Device, ExtentSize);
            return true;
        }
        catch (Exception e) when (e is not ArgumentException)
        {
            s_rebuildFailures.Add(1, _tag);
            ReplicationLog.MoveFailed(Log.Logger, Name, extent, replacement.NodeId, replacement.Device, e.Message);
            await RollBackAsync(extent, state, replacement).ConfigureAwait(false);
            if (e is OperationCanceledException or ReplicationException)
            {
                throw;
            }

            throw new ReplicationException($"Volume '{Name}', extent {extent}: moving a replica to {replacement.NodeId}/{replacement.Device} failed: {e.Message}", e);
        }
        finally
        {
            Volatile.Write(ref state.Moving, 0);
        }
    }

    /// <summary>
    /// Takes a replica out of an extent's set without a replacement: allowed for a replica that is not in sync, or
    /// when the set keeps at least the volume's replica count in sync (an extra replica left by an interrupted move).
    /// </summary>
    /// <param name="extent">The extent's index.</param>
    /// <param name="replica">The replica (node and device).</param>
    /// <param name="minInSyncLeft">The fewest in-sync replicas that must remain when the replica is in sync.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>True when it was removed; false when it was not in the set.</returns>
    /// <exception cref="ReplicationException">The removal would leave too few in-sync replicas, or failed.</exception>
    public async Task<bool> RemoveReplicaAsync(long extent, ReplicaTarget replica, int minInSyncLeft, CancellationToken cancellationToken = default)
    {
        var state = (ulong)extent < (ulong)_extents.Length ? TryGetExtent(extent) : null;
        if (state?.View == null)
        {
            return false;
        }

        if (!_moves.TryEnter())
        {
            throw new ReplicationException($"Volume '{Name}' is detaching: replica removals are the next owner's to make.");
        }

        if (Interlocked.CompareExchange(ref state.Moving, 1, 0) != 0)
        {
            _moves.Exit();
            throw new ReplicationException($"Volume '{Name}', extent {extent}: a replica move is in progress; try again when it is done.");
        }

        try
        {
            bool removed = false;
            bool ok = await WithWritesHeldAsync(state, async () =>
            {
                var view = state.View!;
                int at = IndexOf(view, replica);
                if (at < 0)
                {
                    return true;
                }

                if (view.Replicas[at].State == ReplicaState.InSync && view.InSync - 1 < minInSyncLeft)
                {
                    throw new ReplicationException($"Volume '{Name}', extent {extent}: removing in-sync replica {replica.NodeId}/{replica.Device} would leave {view.InSync - 1} in sync, fewer than {minInSyncLeft}.");
                }

                await WaitForMarksAsync(state).ConfigureAwait(false);
                await RemoveAtAsync(extent, state, at, cancellationToken).ConfigureAwait(false);
                removed = true;
                return true;
            }, cancellationToken).ConfigureAwait(false);
            if (!ok)
            {
                throw new ReplicationException($"Volume '{Name}', extent {extent}: its writes did not drain within 30 s; {replica.NodeId}/{replica.Device} was kept.");
            }

            if (removed)
            {
                _ = DropSlotAsync(extent, replica);
            }

            return removed;
        }
        finally
        {
            Volatile.Write(ref state.Moving, 0);
            _moves.Exit();
        }
    }

    // With the extent's writes held and no state change in flight: removes the replica at `at` from the store's record
    // and from the view; the per-replica arrays shift with the indices.
    private async Task RemoveAtAsync(long extent, ExtentState state, int at, CancellationToken cancellationToken)
    {
        var view = state.View!;
        var replicas = new ReplicaTarget[view.Replicas.Length - 1];
        for (int r = 0, w = 0; r < view.Replicas.Length; r++)
        {
            if (r != at)
            {
                replicas[w++] = view.Replicas[r];
            }
        }

        ulong version = await _control.SetReplicasAsync(extent, replicas, cancellationToken).ConfigureAwait(false);
        RaiseStateVersion(version);
        lock (state)
        {
            for (int r = at; r < view.Replicas.Length - 1; r++)
            {
                Volatile.Write(ref state.Missed[r], Volatile.Read(ref state.Missed[r + 1]));
                state.Marking[r] = state.Marking[r + 1];
            }

            Volatile.Write(ref state.Missed[view.Replicas.Length - 1], 0);
            state.Marking[view.Replicas.Length - 1] = null;
            state.View = new ExtentView(replicas, LocalNodeId);
        }

        lock (_lock)
        {
            RebuildFlushTargets();
        }
    }

    // After a failed move: the new replica (never in sync, or out of sync again) leaves the record, and its slot is
    // freed; the replaced replica was never touched.
    private async Task RollBackAsync(long extent, ExtentState state, ReplicaTarget replacement)
    {
        try
        {
            bool removed = false;
            await WithWritesHeldAsync(state, async () =>
            {
                var view = state.View!;
                int at = IndexOf(view, replacement);
                if (at < 0 || (view.Replicas[at].State == ReplicaState.InSync && view.InSync - 1 < _spec.MinInSync))
                {
                    return true;
                }

                await WaitForMarksAsync(state).ConfigureAwait(false);
                await RemoveAtAsync(extent, state, at, CancellationToken.None).ConfigureAwait(false);
                removed = true;
                return true;
            }, CancellationToken.None).ConfigureAwait(false);
            if (removed)
            {
                _ = DropSlotAsync(extent, replacement);
            }
        }
        catch (Exception e)
        {
            // The new replica stays in the record out of sync: never read, and the background resync finishes it.
            Log.ControlFailed(Name, $"rolling back the move of extent {extent} to {replacement.NodeId}/{replacement.Device}: {e.Message}");
        }
    }

    /// <summary>
    /// Frees the slots that a replica store holds for this volume's extents and that their replica sets no longer
    /// include: those of a node that comes back after its replicas were rebuilt elsewhere, or a slot drop that did not
    /// reach its store. Each extent is checked and freed with its moves held off, so a replica that joins a set is never
    /// freed; extents this owner has not allocated are left alone.
    /// </summary>
    /// <param name="nodeId">The node whose store is swept.</param>
    /// <param name="device">The store's device index on that node.</param>
    /// <param name="cancellationToken">Cancels the sweep (slots freed so far stay free).</param>
    /// <returns>How many slots were freed; 0 when the volume is fenced or detaching.</returns>
    /// <exception cref="ReplicationException">The store could not be asked, or answered a list no volume of this
    /// size has.</exception>
    public async Task<int> DropOrphanSlotsAsync(string nodeId, int device, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(nodeId);
        if (IsFenced || !_moves.TryEnter())
        {
            return 0;
        }

        try
        {
            int freed = 0;
            var target = new ReplicaTarget(nodeId, device, ReplicaState.InSync);
            foreach (long extent in await ListStoredExtentsAsync(target).ConfigureAwait(false))
            {
                cancellationToken.ThrowIfCancellationRequested();
                var state = TryGetExtent(extent);
                if (state?.View == null || Interlocked.CompareExchange(ref state.Moving, 1, 0) != 0)
                {
                    continue; // not allocated here, or a move runs (the next sweep looks again)
                }

                try
                {
                    // Read with moves held off: a replica joining the set is in the view before it has a slot.
                    if (IndexOf(state.View!, target) < 0 && await DropSlotAsync(extent, target).ConfigureAwait(false))
                    {
                        freed++;
                    }
                }
                finally
                {
                    Volatile.Write(ref state.Moving, 0);
                }
            }

            if (freed > 0)
            {
                ReplicationLog.OrphansDropped(Log.Logger, Name, nodeId, device, freed);
            }

            return freed;
        }
        finally
        {
            _moves.Exit();
        }
    }

    // The extents a store holds slots for, of this volume (indices checked against its size).
    private async Task<List<long>> ListStoredExtentsAsync(ReplicaTarget target)
    {
        var list = new List<long>();
        await ListAsync(target, ReplicaOperation.ListExtents, 8, "its extents", "its orphaned slots stay until the next sweep.", (entries, count) =>
        {
            for (int i = 0; i < count; i++)
            {
                long extent = BinaryPrimitives.ReadInt64LittleEndian(entries[(i * 8)..]);
                if ((ulong)extent < (ulong)_extents.Length)
                {
                    list.Add(extent);
                }
            }
        }).ConfigureAwait(false);
        return list;
    }

    // Called while a move, removal or sweep holds the gate (it enters before its first await): a detach waits for the
    // drop. True when the store freed the slot.
    private async Task<bool> DropSlotAsync(long extent, ReplicaTarget target)
    {
        if (!_moves.TryEnterNested())
        {
            return false;
        }

        try
        {
            var request = NewRequest(ReplicaOperation.DropExtent, target.Device, extent, 0, 0);
            var answer = await _lane.ExecuteAsync(target.NodeId, request).ConfigureAwait(false);
            var status = answer.Status;
            answer.Dispose();
            ReplicationLog.SlotDropped(Log.Logger, Name, extent, target.NodeId, target.Device, status.ToString());
            return status == ReplicaStatus.Ok;
        }
        catch (Exception e)
        {
            Log.ControlFailed(Name, $"freeing extent {extent} on {target.NodeId}/{target.Device}: {e.Message}");
            return false;
        }
        finally
        {
            _moves.Exit();
        }
    }

    // State changes in flight (a failed write's or flush's out-of-sync mark) name replicas by index: let them finish
    // before the indices change.
    private static async Task WaitForMarksAsync(ExtentState state)
    {
        for (int r = 0; r < state.Marking.Length; r++)
        {
            Task<bool>? pending;
            lock (state)
            {
                pending = state.Marking[r];
            }

            if (pending != null && !pending.IsCompleted)
            {
                await pending.ConfigureAwait(false);
            }
        }
    }

    private static int IndexOf(ExtentView view, ReplicaTarget target)
    {
        for (int r = 0; r < view.Replicas.Length; r++)
        {
            if (view.Replicas[r].NodeId == target.NodeId && view.Replicas[r].Device == target.Device)
            {
                return r;
            }
        }

        return -1;
    }
}
