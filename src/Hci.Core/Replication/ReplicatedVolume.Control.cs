using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.InteropServices;
using Hci.Core.Blocks;
using Hci.Core.Cluster;

namespace Hci.Core.Replication;

// The control side of a replicated volume: attach (fence and reconcile), resync, marking clean, read repair. It runs
// as ordinary async code; its replica requests go through the volume's control lane (a reactor of its own), as
// Background I/O.
public sealed partial class ReplicatedVolume
{
    private const int ListBufferBytes = 64 * 1024;

    private long _cleanPasses;

    private long RegionSize => ExtentSize / ReplicaGeometry.RegionsPerExtent;

    // ---- attach

    private async Task AttachAsync(CancellationToken cancellationToken)
    {
        // 1. Fence: every replica learns the new epoch before anything is read or copied, so the previous owner's
        // requests are refused from now on even if it is only cut off.
        var unreachable = new HashSet<(string, int)>();
        foreach (var target in FlushTargets)
        {
            var request = NewRequest(ReplicaOperation.Fence, target.Device, 0, 0, 0);
            var answer = await _lane.ExecuteAsync(target.NodeId, request).ConfigureAwait(false);
            var status = answer.Status;
            ulong observed = answer.ObservedEpoch;
            answer.Dispose();
            if (status == ReplicaStatus.StaleEpoch)
            {
                throw new ReplicationException(
                    $"Volume '{Name}': replica {target.NodeId}/{target.Device} has seen epoch {observed}, newer than this attach's {Epoch}: another node attached it since. Attach it again to take a newer epoch.");
            }

            if (status != ReplicaStatus.Ok)
            {
                unreachable.Add((target.NodeId, target.Device));
                ReplicationLog.UnreachableAtAttach(Log.Logger, Name, target.NodeId, target.Device);
            }
        }

        // 2. Refuse before anything changes when an extent has no reachable in-sync replica. The in-sync replicas of
        // the record are exactly those that may hold the extent's newest writes (a replica that missed one was marked
        // out of sync before the write was acknowledged without it), so serving from any other would return older
        // data, and marking the unreachable ones out of sync would leave no replica to resync from, ever.
        for (long i = 0; i < _extents.Length; i++)
        {
            var view = _extents[i]?.View;
            if (view != null && !view.Replicas.Any(t => t.State == ReplicaState.InSync && !unreachable.Contains((t.NodeId, t.Device))))
            {
                string newest = string.Join(", ", view.Replicas.Where(t => t.State == ReplicaState.InSync).Select(t => $"{t.NodeId}/{t.Device}"));
                string older = string.Join(", ", view.Replicas.Where(t => t.State != ReplicaState.InSync).Select(t => $"{t.NodeId}/{t.Device}"));
                throw new ReplicationException(
                    $"Volume '{Name}': extent {i} has no reachable in-sync replica: its newest writes may be only on {newest}, which cannot be reached{(older.Length > 0 ? $" ({older} missed writes and is not served)" : string.Empty)}. Bring {newest} back; the volume is not served until then.");
            }
        }

        // 3. Replicas that are not in sync missed an unknown set of writes (the previous owner's bitmaps are gone):
        // they get whole extents. In-sync replicas that cannot be reached now are marked out of sync.
        for (long i = 0; i < _extents.Length; i++)
        {
            var state = _extents[i];
            var view = state?.View;
            if (view == null)
            {
                continue;
            }

            for (int r = 0; r < view.Replicas.Length; r++)
            {
                var target = view.Replicas[r];
                if (target.State != ReplicaState.InSync)
                {
                    state!.Missed[r] = ulong.MaxValue;
                }
                else if (unreachable.Contains((target.NodeId, target.Device)))
                {
                    state!.Missed[r] = ulong.MaxValue;
                    if (!await SetStateAsync(i, state, r, ReplicaState.OutOfSync, cancellationToken).ConfigureAwait(false))
                    {
                        throw new ReplicationException($"Volume '{Name}': could not mark unreachable replica {target.NodeId}/{target.Device} of extent {i} out of sync in the cluster store; is the store reachable?");
                    }
                }
            }

        }

        // 4. Reconcile: the regions any replica's activity log holds may differ between replicas (the previous
        // owner's writes in flight); copy them from one in-sync replica to the others, then mark them clean.
        var dirty = new Dictionary<long, ulong>();
        foreach (var target in FlushTargets)
        {
            if (!unreachable.Contains((target.NodeId, target.Device)))
            {
                await ReadDirtyRegionsAsync(target, dirty).ConfigureAwait(false);
            }
        }

        long regions = 0;
        long bytes = 0;
        foreach (var (extent, mask) in dirty.OrderBy(e => e.Key))
        {
            var state = extent >= 0 && extent < _extents.Length ? _extents[extent] : null;
            if (state?.View == null)
            {
                continue; // not allocated in the store: nothing the volume can read there
            }

            var view = state.View;
            for (ulong left = mask; left != 0; left &= left - 1)
            {
                int region = BitOperations.TrailingZeroCount(left);
                if (await CopyRegionAsync(extent, view, region, -1, cancellationToken).ConfigureAwait(false))
                {
                    regions++;
                    bytes += RegionSize;
                }
            }

            await MarkCleanAsync(extent, view, mask).ConfigureAwait(false);
        }

        Interlocked.Add(ref _reconciledRegions, regions);
        Interlocked.Add(ref _reconciledBytes, bytes);
        s_reconciledBytes.Add(bytes, _tag);
        ReplicationLog.Attached(Log.Logger, Name, Epoch, regions, bytes);
    }

    private Task ReadDirtyRegionsAsync(ReplicaTarget target, Dictionary<long, ulong> dirty) =>
        ListAsync(target, ReplicaOperation.GetDirtyRegions, 16, "its activity log", "cannot reconcile. Check the node and attach again.", (entries, count) =>
        {
            for (int i = 0; i < count; i++)
            {
                long extent = BinaryPrimitives.ReadInt64LittleEndian(entries[(i * 16)..]);
                ulong mask = BinaryPrimitives.ReadUInt64LittleEndian(entries[((i * 16) + 8)..]);
                dirty[extent] = dirty.GetValueOrDefault(extent) | mask;
            }
        });

    private delegate void ListReader(ReadOnlySpan<byte> entries, int count);

    // Asks a store for one of its lists of this volume (entries of entryBytes each), growing the buffer to the count
    // it answers. A store lists at most one entry per extent of the volume: more is a broken or hostile answer, which
    // must not make the owner grow its buffer (or loop) without end.
    private async Task ListAsync(ReplicaTarget target, ReplicaOperation operation, int entryBytes, string what, string otherwise, ListReader read)
    {
        int capacity = ListBufferBytes;
        while (true)
        {
            var buffer = new NativeBuffer(capacity);
            try
            {
                var request = NewRequest(operation, target.Device, 0, 0, 0);
                request.Class = IoClass.Background;
                buffer.AddTo(request);
                var answer = await _lane.ExecuteAsync(target.NodeId, request).ConfigureAwait(false);
                var status = answer.Status;
                int count = answer.Result;
                answer.Dispose();
                if (status != ReplicaStatus.Ok || count < 0)
                {
                    throw new ReplicationException($"Volume '{Name}': replica {target.NodeId}/{target.Device} did not list {what} ({status}); {otherwise}");
                }

                if ((long)count * entryBytes > capacity)
                {
                    if (count > _extents.Length || (long)count * entryBytes > 64L << 20)
                    {
                        throw new ReplicationException($"Volume '{Name}': replica {target.NodeId}/{target.Device} answered {count} entries for {what}, more than the volume's {_extents.Length} extents; check that node's store.");
                    }

                    capacity = (int)((long)count * entryBytes);
                    continue;
                }

                read(buffer.Span, count);
                return;
            }
            finally
            {
                buffer.Dispose();
            }
        }
    }

    // ---- background: resync and marking clean

    private async Task BackgroundAsync(CancellationToken cancellationToken)
    {
        var scrubbing = ScrubLoopAsync(cancellationToken);
        var interval = _options.ResyncInterval < _options.CleanAfter ? _options.ResyncInterval : _options.CleanAfter;
        long cleanTicks = 0;
        long resyncTicks = 0;
        try
        {
            while (!cancellationToken.IsCancellationRequested)
            {
                try
                {
                    _recoveryPacer.Observe();
                    if (!IsFenced)
                    {
                        resyncTicks += interval.Ticks;
                        if (resyncTicks >= _options.ResyncInterval.Ticks)
                        {
                            resyncTicks = 0;
                            await ResyncPassAsync(cancellationToken).ConfigureAwait(false);
                        }

                        cleanTicks += interval.Ticks;
                        if (cleanTicks >= _options.CleanAfter.Ticks)
                        {
                            cleanTicks = 0;
                            await CleanPassAsync(cancellationToken).ConfigureAwait(false);
                        }
                    }
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    Log.ControlFailed(Name, $"background work: {e.Message}");
                }

                await Task.Delay(interval, cancellationToken).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }

        await scrubbing.ConfigureAwait(false);
    }

    private async Task ResyncPassAsync(CancellationToken cancellationToken)
    {
        var probed = new Dictionary<(string, int), bool>();
        for (long i = 0; i < _extents.Length && !cancellationToken.IsCancellationRequested; i++)
        {
            var state = Volatile.Read(ref _extents[i]);
            var view = state?.View;
            if (view == null || view.InSync == view.Replicas.Length || Volatile.Read(ref state!.Moving) != 0)
            {
                continue; // all in sync, or a replica move copies this extent itself
            }

            for (int r = 0; r < view.Replicas.Length; r++)
            {
                var target = view.Replicas[r];
                if (target.State == ReplicaState.InSync)
                {
                    continue;
                }

                if (!probed.TryGetValue((target.NodeId, target.Device), out bool up))
                {
                    // The data path must reach the node too: a flush it cannot send to a replica being resynced makes
                    // every region of the replica's extents missed again (what it took may not be durable).
                    up = await ProbeAsync(target).ConfigureAwait(false) && QueuesReach(target.NodeId);
                    probed[(target.NodeId, target.Device)] = up;
                }

                if (up && !await ResyncExtentAsync(i, state!, r, cancellationToken).ConfigureAwait(false))
                {
                    probed[(target.NodeId, target.Device)] = false;
                }
            }
        }
    }

    private async Task<bool> ProbeAsync(ReplicaTarget target)
    {
        var request = NewRequest(ReplicaOperation.Fence, target.Device, 0, 0, 0);
        var answer = await _lane.ExecuteAsync(target.NodeId, request).ConfigureAwait(false);
        var status = answer.Status;
        ulong observed = answer.ObservedEpoch;
        answer.Dispose();
        if (status == ReplicaStatus.StaleEpoch)
        {
            OnFenced(observed);
        }

        return status == ReplicaStatus.Ok;
    }

    // Copies the regions the replica missed, one at a time with the extent's writes held, then marks it in sync
    // while writes are still held, so no write can slip between the last copy and the switch.
    private async Task<bool> ResyncExtentAsync(long extent, ExtentState state, int replica, CancellationToken cancellationToken)
    {
        var target = state.View!.Replicas[replica];
        if (target.State == ReplicaState.OutOfSync
            && !await SetStateAsync(extent, state, replica, ReplicaState.Resyncing, cancellationToken).ConfigureAwait(false))
        {
            return false;
        }

        int regions = 0;
        long bytes = 0;
        while (!cancellationToken.IsCancellationRequested)
        {
            ulong missed = Volatile.Read(ref state.Missed[replica]);
            if (missed == 0)
            {
                bool done = await WithWritesHeldAsync(state, async () =>
                {
                    if (Volatile.Read(ref state.Missed[replica]) != 0)
                    {
                        return false;
                    }

                    return await SetStateAsync(extent, state, replica, ReplicaState.InSync, cancellationToken).ConfigureAwait(false);
                }, cancellationToken).ConfigureAwait(false);
                if (done)
                {
                    Interlocked.Add(ref _resyncedBytes, bytes);
                    Interlocked.Add(ref _resyncedRegions, regions);
                    s_resyncBytes.Add(bytes, _tag);
                    ReplicationLog.Resynced(Log.Logger, Name, extent, target.NodeId, target.Device, regions, bytes);
                    return true;
                }

                continue;
            }

            int region = BitOperations.TrailingZeroCount(missed);
            ulong bit = 1UL << region;
            await _recoveryPacer.PaceAsync(RegionSize, cancellationToken).ConfigureAwait(false);
            bool copied = await WithRegionHeldAsync(state, region, async () =>
            {
                Interlocked.And(ref state.Missed[replica], ~bit);
                bool ok = await CopyRegionAsync(extent, state.View!, region, replica, cancellationToken).ConfigureAwait(false);
                if (!ok)
                {
                    Interlocked.Or(ref state.Missed[replica], bit);
                }

                return ok;
            }, cancellationToken).ConfigureAwait(false);
            if (!copied)
            {
                return false;
            }

            regions++;
            bytes += RegionSize;
        }

        return false;
    }

    private async Task CleanPassAsync(CancellationToken cancellationToken)
    {
        // Extents written since the last look are active; the idle ones leave the activity log, least recently
        // written first, while more than ActivityLogExtents written extents are in it or once idle for
        // ActivityLogIdleLimit (a dirty region's checksums are recomputed from its data when a store opens, so a
        // region should not stay in the log for ever).
        long pass = ++_cleanPasses;
        long expiry = Math.Max(1, (long)Math.Ceiling(_options.ActivityLogIdleLimit.Ticks / (double)_options.CleanAfter.Ticks));
        int written = 0;
        List<(long LastActive, long Extent, long Seen)>? idle = null;
        for (long i = 0; i < _extents.Length; i++)
        {
            var state = Volatile.Read(ref _extents[i]);
            if (state?.View == null || Volatile.Read(ref state.Written) == 0)
            {
                continue;
            }

            written++;
            long started = Interlocked.Read(ref state.Started);
            if (started != state.CleanerSeen)
            {
                state.CleanerSeen = started;
                state.LastActivePass = pass;
            }
            else if (Volatile.Read(ref state.InFlight) == 0)
            {
                (idle ??= []).Add((state.LastActivePass, i, started));
            }
        }

        if (idle == null)
        {
            return;
        }

        idle.Sort(); // the least recently written first, so the ones idle past the limit come first
        foreach (var (lastActive, i, seen) in idle)
        {
            if (cancellationToken.IsCancellationRequested || (written <= _options.ActivityLogExtents && pass - lastActive < expiry))
            {
                break;
            }

            if (await CleanExtentAsync(i, _extents[i]!, cancellationToken, seen).ConfigureAwait(false))
            {
                written--;
            }
        }
    }

    // With seen, an extent written since the pass saw it idle stays in the log (checked while its writes are held, so
    // no write can start in between).
    private Task<bool> CleanExtentAsync(long extent, ExtentState state, CancellationToken cancellationToken, long? seen = null)
        => WithWritesHeldAsync(state, async () =>
        {
            if (seen is { } s && Interlocked.Read(ref state.Started) != s)
            {
                return false;
            }

            ulong mask = Interlocked.Exchange(ref state.Written, 0);
            if (mask != 0 && !await MarkCleanAsync(extent, state.View!, mask).ConfigureAwait(false))
            {
                Interlocked.Or(ref state.Written, mask);
                return false;
            }

            return true;
        }, cancellationToken);

    private async Task<bool> MarkCleanAsync(long extent, ExtentView view, ulong mask)
    {
        bool all = true;
        foreach (var target in view.Replicas)
        {
            if (target.State != ReplicaState.InSync)
            {
                continue; // a replica out of sync keeps its marks: reconciling them again is harmless
            }

            var request = NewRequest(ReplicaOperation.MarkClean, target.Device, extent, 0, 0);
            request.Argument = mask;
            var answer = await _lane.ExecuteAsync(target.NodeId, request).ConfigureAwait(false);
            all &= answer.Status == ReplicaStatus.Ok;
            answer.Dispose();
        }

        return all;
    }

    // ---- read repair

    internal void RepairLater(long extent, long offset, int length, int badReplicas)
        => _ = Task.Run(() => RepairAsync(extent, offset, length, badReplicas));

    private async Task RepairAsync(long extent, long offset, int length, int badReplicas)
    {
        var state = TryGetExtent(extent);
        if (state?.View == null)
        {
            return;
        }

        try
        {
            await WithWritesHeldAsync(state, async () =>
            {
                var view = state.View!;
                using var buffer = new NativeBuffer(length);
                int source = await ReadGoodAsync(extent, view, offset, buffer, badReplicas).ConfigureAwait(false);
                if (source < 0)
                {
                    return false;
                }

                for (int r = 0; r < view.Replicas.Length; r++)
                {
                    if ((badReplicas & (1 << r)) == 0 || view.Replicas[r].State != ReplicaState.InSync)
                    {
                        continue;
                    }

                    var target = view.Replicas[r];
                    var write = NewRequest(ReplicaOperation.Write, target.Device, extent, offset, 0);
                    write.Class = IoClass.Background;
                    write.Flags = BlockRequestFlags.ForceUnitAccess;
                    buffer.AddTo(write);
                    var answer = await _lane.ExecuteAsync(target.NodeId, write).ConfigureAwait(false);
                    var status = answer.Status;
                    answer.Dispose();
                    if (status == ReplicaStatus.Ok)
                    {
                        Interlocked.Increment(ref _readRepairs);
                        s_readRepairs.Add(1, _tag);
                        ReplicationLog.Repaired(Log.Logger, Name, extent, offset, length, target.NodeId, target.Device);
                    }
                    else
                    {
                        Interlocked.Or(ref state.Missed[r], ReplicaGeometry.RegionMask(offset, length, RegionSize));
                        await MarkOutOfSyncAsync(extent, state, r).ConfigureAwait(false);
                    }
                }

                return true;
            }, _stop.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            Log.ControlFailed(Name, $"read repair of extent {extent}: {e.Message}");
        }
    }

    // After a write that no replica took (all failed or timed out, some may have applied it anyway): make the
    // replicas agree on the regions again by copying them from one in-sync replica to the others.
    internal void ReconcileLater(long extent, ulong regions)
        => _ = Task.Run(async () =>
        {
            var state = TryGetExtent(extent);
            if (state?.View == null)
            {
                return;
            }

            try
            {
                await WithWritesHeldAsync(state, async () =>
                {
                    bool all = true;
                    for (ulong left = regions; left != 0; left &= left - 1)
                    {
                        all &= await CopyRegionAsync(extent, state.View!, BitOperations.TrailingZeroCount(left), -1, _stop.Token).ConfigureAwait(false);
                    }

                    return all;
                }, _stop.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                Log.ControlFailed(Name, $"reconciling extent {extent} after a failed write: {e.Message}");
            }
        });

    // ---- copies

    // Copies one region from an in-sync replica to the replica given (or, with -1, to every other in-sync replica).
    private async Task<bool> CopyRegionAsync(long extent, ExtentView view, int region, int toReplica, CancellationToken cancellationToken)
    {
        long regionSize = RegionSize;
        long offset = region * regionSize;
        using var buffer = new NativeBuffer((int)regionSize);
        int exclude = toReplica >= 0 ? 1 << toReplica : 0;
        int source = await ReadGoodAsync(extent, view, offset, buffer, exclude).ConfigureAwait(false);
        if (source < 0)
        {
            return false;
        }

        bool ok = true;
        for (int r = 0; r < view.Replicas.Length; r++)
        {
            if (r == source || (toReplica >= 0 ? r != toReplica : view.Replicas[r].State != ReplicaState.InSync))
            {
                continue;
            }

            cancellationToken.ThrowIfCancellationRequested();
            var target = view.Replicas[r];
            var write = NewRequest(ReplicaOperation.Write, target.Device, extent, offset, 0);
            write.Class = IoClass.Background;
            write.Flags = BlockRequestFlags.ForceUnitAccess;
            buffer.AddTo(write);
            var answer = await _lane.ExecuteAsync(target.NodeId, write).ConfigureAwait(false);
            ok &= answer.Status == ReplicaStatus.Ok;
            answer.Dispose();
        }

        return ok;
    }

    // Reads a range from an in-sync replica (local first) that is not excluded and passes its checksums; the index
    // of the replica read, or -1.
    private async Task<int> ReadGoodAsync(long extent, ExtentView view, long offset, NativeBuffer buffer, int exclude)
    {
        var order = Enumerable.Range(0, view.Replicas.Length)
            .Where(r => (exclude & (1 << r)) == 0 && view.Replicas[r].State == ReplicaState.InSync)
            .OrderBy(r => view.Replicas[r].NodeId == LocalNodeId ? 0 : 1);
        foreach (int r in order)
        {
            var target = view.Replicas[r];
            var read = NewRequest(ReplicaOperation.Read, target.Device, extent, offset, 0);
            read.Class = IoClass.Background;
            buffer.AddTo(read);
            var answer = await _lane.ExecuteAsync(target.NodeId, read).ConfigureAwait(false);
            var status = answer.Status;
            answer.Dispose();
            if (status == ReplicaStatus.Ok)
            {
                return r;
            }

            if (status == ReplicaStatus.ChecksumMismatch)
            {
                CountChecksumMismatch(extent, target);
            }
        }

        return -1;
    }

    // Runs work with the extent's writes held: new writes wait in their queues, and the work starts once the writes
    // in flight have finished. Holding is short (a region copy, a state change).
    private async Task<bool> WithWritesHeldAsync(ExtentState state, Func<Task<bool>> work, CancellationToken cancellationToken)
    {
        await state.Gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            state.Cleaning = 1;
            Interlocked.MemoryBarrier();
            return await DrainedAsync(() => Volatile.Read(ref state.InFlight) == 0, cancellationToken).ConfigureAwait(false)
                && await work().ConfigureAwait(false);
        }
        finally
        {
            state.Cleaning = 0;
            state.Gate.Release();
            SignalQueues();
        }
    }

    // Waits until the writes a hold covers have finished (`drained`), for at most 30 s; false when they did not.
    private static async Task<bool> DrainedAsync(Func<bool> drained, CancellationToken cancellationToken)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!drained())
        {
            if (DateTime.UtcNow > deadline)
            {
                return false;
            }

            await Task.Yield();
            await Task.Delay(1, cancellationToken).ConfigureAwait(false);
        }

        return true;
    }

    // Runs a region copy with that region's writes held: new writes to it wait in their queues, the copy starts once
    // its writes in flight have finished, and writes to the extent's other regions go on meanwhile (a client write
    // waits for a copy only when it hits the very region being copied). Holders of the whole extent are excluded.
    private async Task<bool> WithRegionHeldAsync(ExtentState state, int region, Func<Task<bool>> work, CancellationToken cancellationToken)
    {
        ulong bit = 1UL << region;
        await state.Gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            Interlocked.Or(ref state.HeldRegions, bit);
            return await DrainedAsync(() => Volatile.Read(ref state.RegionInFlight[region]) == 0, cancellationToken).ConfigureAwait(false)
                && await work().ConfigureAwait(false);
        }
        finally
        {
            Interlocked.And(ref state.HeldRegions, ~bit);
            state.Gate.Release();
            SignalQueues();
        }
    }

    private ReplicaRequest NewRequest(ReplicaOperation operation, int device, long extent, long offset, int length)
    {
        var request = new ReplicaRequest(1)
        {
            Operation = operation,
            VolumeId = VolumeId,
            Device = device,
            Extent = extent,
            Offset = offset,
            Length = length,
            Epoch = Epoch,
            Class = IoClass.Background,
        };
        return request;
    }

    /// <summary>Aligned native memory for control-plane copies.</summary>
    private sealed unsafe class NativeBuffer : IDisposable
    {
        private void* _pointer;

        public NativeBuffer(int length)
        {
            Length = length;
            _pointer = NativeMemory.AlignedAlloc((nuint)length, 4096);
            new Span<byte>(_pointer, length).Clear();
        }

        public int Length { get; }

        public Span<byte> Span => new(_pointer, Length);

        public void AddTo(ReplicaRequest request) => request.AddSegment(_pointer, Length);

        public void AddTo(ReplicaRequest request, int offset, int length) => request.AddSegment((byte*)_pointer + offset, length);

        public void SetChecksums(ReplicaRequest request) => request.Checksums = (uint*)_pointer;

        public void Dispose()
        {
            if (_pointer != null)
            {
                NativeMemory.AlignedFree(_pointer);
                _pointer = null;
            }
        }
    }
}
