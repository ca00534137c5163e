using System.Diagnostics;
using System.Diagnostics.Metrics;
using Hci.Core.Blocks;
using Hci.Core.Cluster;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Hci.Core.Replication;

/// <summary>
/// A volume whose extents live on several replica stores, served by this node as its owner: a <see cref="BlockDevice"/>
/// that any front-end (vhost-user-blk, iSCSI, the in-process client) can be handed without knowing what is behind it.
/// </summary>
/// <remarks>
/// <para><b>Writes</b> go to every in-sync replica of the extent in parallel (the local one in process) and are
/// acknowledged when every in-sync replica has them with the durability asked for. A replica that fails or does not
/// answer is marked out of sync in the cluster store (which advances the epoch) before the write is acknowledged
/// without it, and the regions it missed are remembered; below <see cref="ReplicatedVolumeSpec.MinInSync"/> in-sync
/// replicas, writes fail with EIO.</para>
/// <para><b>Reads</b> go to the local in-sync replica when there is one, else to a remote in-sync one. A block that
/// fails its checksum is read from another in-sync replica and the bad copy is rewritten (read repair). A replica
/// that is out of sync is never read.</para>
/// <para><b>In the background</b> (its own reactor, <see cref="IoClass.Background"/>): replicas out of sync are
/// probed and, once back, only the regions they missed are copied to them before they are marked in sync; extents
/// that saw no write for a while are marked clean in the replicas' activity logs. <see cref="OpenAsync"/> fences every
/// replica with the new epoch and reconciles the regions a previous owner left in their activity logs before it
/// returns, so a crash of the previous owner leaves no replica that differs from the others.</para>
/// </remarks>
public sealed partial class ReplicatedVolume : BlockDevice
{
    private static readonly Meter s_meter = new("Hci.Core.Replication");
    private static readonly Counter<long> s_readRepairs = s_meter.CreateCounter<long>("hci.replication.read_repairs", "{block}", "Blocks rewritten on a replica after they failed their checksum.");
    private static readonly Counter<long> s_mismatches = s_meter.CreateCounter<long>("hci.replication.checksum_mismatches", "{read}", "Replica reads refused because a block failed its checksum.");
    private static readonly Counter<long> s_resyncBytes = s_meter.CreateCounter<long>("hci.replication.resync_bytes", "By", "Bytes copied to replicas coming back in sync.");
    private static readonly Counter<long> s_reconciledBytes = s_meter.CreateCounter<long>("hci.replication.reconciled_bytes", "By", "Bytes copied between replicas at attach to settle a previous owner's in-flight writes.");
    private static readonly Counter<long> s_outOfSync = s_meter.CreateCounter<long>("hci.replication.out_of_sync_marks", "{replica}", "Extent replicas marked out of sync after a failed write or flush.");

    private readonly ReplicatedVolumeSpec _spec;
    private readonly IVolumeControl _control;
    private readonly ReplicatedVolumeOptions _options;
    private readonly RecoveryPacer _recoveryPacer;
    private long _retiredLatencyTicks;
    private long _retiredLatencyCount;
    private readonly ExtentState?[] _extents;
    private readonly List<ReplicatedVolumeQueue> _queues = [];
    private readonly Lock _lock = new();
    private readonly ControlLane _lane;
    private readonly CancellationTokenSource _stop = new();
    private readonly OperationGate _moves = new();
    private readonly KeyValuePair<string, object?> _tag;
    private ReplicaTarget[] _flushTargets = [];
    private long _stateVersion;
    private int _fenced;
    private readonly TaskCompletionSource _revoked = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Task? _background;
    private int _detached;

    private long _readRepairs;
    private long _checksumMismatches;
    private long _resyncedBytes;
    private long _resyncedRegions;
    private long _reconciledBytes;
    private long _reconciledRegions;
    private long _outOfSyncMarks;

    private ReplicatedVolume(ReplicatedVolumeSpec spec, IReplicaConnector connector, IVolumeControl control, ReplicatedVolumeOptions options)
        : base(spec.Name, new BlockGeometry(ReplicaGeometry.BlockSize, spec.Size, ReplicaGeometry.MaxTransfer, maxSegments: 256, options.BufferAlignment, Environment.ProcessorCount),
               BlockDeviceCapabilities.Flush | BlockDeviceCapabilities.ForceUnitAccess | BlockDeviceCapabilities.PersistentData)
    {
        _spec = spec;
        Connector = connector;
        _control = control;
        _options = options;
        _recoveryPacer = new RecoveryPacer(ClientLatency, options.TimeProvider, Stopwatch.Frequency, options.RecoveryBytesPerSecond, options.RecoveryLatencyFactor);
        _extents = new ExtentState?[spec.ExtentCount];
        _tag = new KeyValuePair<string, object?>("volume", spec.Name);
        Log = new VolumeLog((options.LoggerFactory ?? NullLoggerFactory.Instance).CreateLogger<ReplicatedVolume>());
        int maxReplicas = MaxReplicas(spec);
        foreach (var (index, replicas) in spec.Extents)
        {
            var state = new ExtentState(maxReplicas) { View = new ExtentView(replicas, spec.LocalNodeId) };
            _extents[index] = state;
        }

        RebuildFlushTargets();
        _lane = new ControlLane($"hci-repl-{spec.Name}", connector);
    }

    /// <summary>
    /// Attaches the volume on this node: fences every replica with <see cref="ReplicatedVolumeSpec.Epoch"/>, reconciles
    /// the regions a previous owner left in the replicas' activity logs, and starts the background work.
    /// </summary>
    /// <param name="spec">The volume, as the cluster store has it after this node took ownership.</param>
    /// <param name="connector">The way to every node's replica stores (the local one in process).</param>
    /// <param name="control">The cluster store's side: allocations and replica states.</param>
    /// <param name="options">Options; null for the defaults.</param>
    /// <param name="cancellationToken">Cancels the attach.</param>
    /// <returns>The volume, ready to serve.</returns>
    /// <exception cref="ArgumentException">The spec or the options are invalid (the message says what to fix).</exception>
    /// <exception cref="ReplicationException">A replica has seen a newer owner (this node was fenced), or an extent has
    /// no reachable in-sync replica.</exception>
    public static async Task<ReplicatedVolume> OpenAsync(ReplicatedVolumeSpec spec, IReplicaConnector connector, IVolumeControl control, ReplicatedVolumeOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(connector);
        ArgumentNullException.ThrowIfNull(control);
        options ??= new ReplicatedVolumeOptions();
        options.Validate();
        spec.Validate();
        var volume = new ReplicatedVolume(spec, connector, control, options);
        try
        {
            await volume.AttachAsync(cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            await volume.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        volume._background = Task.Run(() => volume.BackgroundAsync(volume._stop.Token), CancellationToken.None);
        return volume;
    }

    /// <inheritdoc/>
    public override string Engine => "replicated";

    /// <summary>The volume's id.</summary>
    public ulong VolumeId => _spec.VolumeId;

    /// <summary>The extent size in bytes.</summary>
    public long ExtentSize => _spec.ExtentSize;

    /// <summary>This node's id.</summary>
    public string LocalNodeId => _spec.LocalNodeId;

    /// <summary>Writes fail below this many in-sync replicas of an extent.</summary>
    public int MinInSync => _spec.MinInSync;

    /// <summary>The ownership epoch stamped on every replica request: replicas refuse anything older, which fences a
    /// previous owner.</summary>
    public ulong Epoch => _spec.Epoch;

    /// <summary>The volume's state version in the cluster store as this owner last saw it (it advances with every
    /// replica marked out of sync; it is not the fencing epoch, so the owner's own requests in flight are never
    /// refused because of it).</summary>
    public ulong StateVersion => (ulong)Volatile.Read(ref _stateVersion);

    /// <summary>True once a replica answered that a newer owner exists: every request fails with EIO from then on.</summary>
    public bool IsFenced => Volatile.Read(ref _fenced) != 0;

    /// <summary>What the volume has repaired, resynced and reconciled so far.</summary>
    public ReplicationStats Stats => new(
        Interlocked.Read(ref _readRepairs),
        Interlocked.Read(ref _checksumMismatches),
        Interlocked.Read(ref _resyncedBytes),
        Interlocked.Read(ref _resyncedRegions),
        Interlocked.Read(ref _reconciledBytes),
        Interlocked.Read(ref _reconciledRegions),
        Interlocked.Read(ref _outOfSyncMarks));

    /// <summary>The allocated extents with their replicas as this owner sees them now, and the regions each replica
    /// still has to be sent (resync progress).</summary>
    /// <returns>One entry per allocated extent, in index order.</returns>
    public IReadOnlyList<ExtentStatus> GetExtents()
    {
        var list = new List<ExtentStatus>();
        for (long i = 0; i < _extents.Length; i++)
        {
            var state = Volatile.Read(ref _extents[i]);
            var view = state?.View;
            if (view == null)
            {
                continue;
            }

            var missed = new int[view.Replicas.Length];
            for (int r = 0; r < missed.Length; r++)
            {
                missed[r] = view.Replicas[r].State == ReplicaState.InSync ? 0 : System.Numerics.BitOperations.PopCount(Volatile.Read(ref state!.Missed[r]));
            }

            list.Add(new ExtentStatus(i, view.Replicas, missed));
        }

        return list;
    }

    /// <summary>
    /// Detaches cleanly: stops the background work and the replica moves in flight (each rolled back first; new ones
    /// are refused), marks every written region clean on the replicas (a next owner has nothing to reconcile) and
    /// closes the control channels. Queues must be closed first.
    /// </summary>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>A task that completes when detached.</returns>
    public async Task DetachAsync(CancellationToken cancellationToken = default)
    {
        if (Interlocked.Exchange(ref _detached, 1) != 0)
        {
            return;
        }

        await _stop.CancelAsync().ConfigureAwait(false);
        if (_background != null)
        {
            try
            {
                await _background.WaitAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
            }
        }

        // Replica moves in flight stop at the cancellation above and roll back through the lane: it must outlive them.
        await _moves.CloseAsync().WaitAsync(cancellationToken).ConfigureAwait(false);

        // A scrub asked for by hand stops at the cancellation above; it must be out of the lane before the lane goes.
        await _scrubGate.WaitAsync(cancellationToken).ConfigureAwait(false);

        if (!IsFenced)
        {
            for (long i = 0; i < _extents.Length; i++)
            {
                var state = Volatile.Read(ref _extents[i]);
                if (state?.View != null && Volatile.Read(ref state.Written) != 0)
                {
                    await CleanExtentAsync(i, state, cancellationToken).ConfigureAwait(false);
                }
            }
        }

        await _lane.DisposeAsync().ConfigureAwait(false);
    }

    /// <inheritdoc/>
    protected override BlockQueue CreateQueueCore(int depth) => new ReplicatedVolumeQueue(this, depth);

    /// <inheritdoc/>
    protected override void DisposeCore()
    {
        if (Volatile.Read(ref _detached) == 0)
        {
            // Not detached cleanly: stop the background work; the written regions stay in the activity logs, and the
            // next owner reconciles them (as after a crash).
            Interlocked.Exchange(ref _detached, 1);
            _stop.Cancel();
            try
            {
                _background?.Wait(TimeSpan.FromSeconds(30));
            }
            catch (AggregateException)
            {
            }

            _scrubGate.Wait(TimeSpan.FromSeconds(30));
            _moves.CloseAsync().Wait(TimeSpan.FromSeconds(30));
            _lane.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }

        _stop.Dispose();
    }

    // ---- what the queues use

    internal IReplicaConnector Connector { get; }

    internal VolumeLog Log { get; }

    internal ReplicaTarget[] FlushTargets => Volatile.Read(ref _flushTargets);

    internal ExtentState? TryGetExtent(long extent) => Volatile.Read(ref _extents[extent]);

    internal ExtentState GetExtent(long extent)
    {
        var state = Volatile.Read(ref _extents[extent]);
        if (state != null)
        {
            return state;
        }

        var made = new ExtentState(MaxReplicas(_spec));
        return Interlocked.CompareExchange(ref _extents[extent], made, null) ?? made;
    }

    internal void Register(ReplicatedVolumeQueue queue)
    {
        lock (_lock)
        {
            _queues.Add(queue);
        }
    }

    internal void Unregister(ReplicatedVolumeQueue queue)
    {
        lock (_lock)
        {
            if (_queues.Remove(queue))
            {
                _retiredLatencyTicks += Volatile.Read(ref queue.LatencyTicks);
                _retiredLatencyCount += Volatile.Read(ref queue.LatencyCount);
            }
        }
    }

    /// <summary>The client's reads and writes completed on this volume so far, and their latency summed (ticks of
    /// <see cref="System.Diagnostics.Stopwatch"/>): both only grow, queues that went away included. What recovery's
    /// pace watches.</summary>
    internal (long Ticks, long Count) ClientLatency()
    {
        lock (_lock)
        {
            long ticks = _retiredLatencyTicks, count = _retiredLatencyCount;
            foreach (var queue in _queues)
            {
                // Count first: a queue adds the ticks before the count, so the mean is never low.
                long n = Volatile.Read(ref queue.LatencyCount);
                ticks += Volatile.Read(ref queue.LatencyTicks);
                count += n;
            }

            return (ticks, count);
        }
    }

    /// <summary>True when every queue's data channels to <paramref name="nodeId"/> are connected (a recent view).</summary>
    internal bool QueuesReach(string nodeId)
    {
        lock (_lock)
        {
            foreach (var queue in _queues)
            {
                if (!queue.Reaches(nodeId))
                {
                    return false;
                }
            }
        }

        return true;
    }

    internal void SignalQueues()
    {
        ReplicatedVolumeQueue[] queues;
        lock (_lock)
        {
            queues = [.. _queues];
        }

        foreach (var queue in queues)
        {
            queue.Signal();
        }
    }

    /// <summary>
    /// Stops serving at once, as when a replica fences this owner: every request from now on fails with EIO, and
    /// <see cref="IsFenced"/> is true. For an owner that can no longer prove it owns the volume, such as a node whose
    /// membership lease in the cluster store was lost: once the lease lapses another node may attach the volume, and
    /// from then on this one must neither acknowledge a write nor serve a read (its local replica may be one the new
    /// owner could not reach and fence). Requests already at the replicas finish as they do.
    /// </summary>
    /// <param name="reason">Why, for the log.</param>
    public void Revoke(string reason)
    {
        ArgumentNullException.ThrowIfNull(reason);
        if (Interlocked.Exchange(ref _fenced, 1) == 0)
        {
            Log.Revoked(Name, Epoch, reason);
            _revoked.TrySetResult();
            SignalQueues();
        }
    }

    internal void OnFenced(ulong observed)
    {
        if (Interlocked.Exchange(ref _fenced, 1) == 0)
        {
            Log.Fenced(Name, Epoch, observed);
            _revoked.TrySetResult();
        }
    }

    internal void CountChecksumMismatch(long extent, ReplicaTarget target)
    {
        Interlocked.Increment(ref _checksumMismatches);
        s_mismatches.Add(1, _tag);
        Log.ChecksumMismatch(Name, extent, target.NodeId, target.Device);
    }

    internal void EnsureAllocated(long extent, ExtentState state)
    {
        lock (state)
        {
            if (state.View != null || (state.Allocating != null && !state.Allocating.IsCompleted))
            {
                return;
            }

            state.Allocating = AllocateAsync(extent, state);
        }
    }

    private async Task AllocateAsync(long extent, ExtentState state)
    {
        try
        {
            var replicas = await _control.AllocateExtentAsync(extent, _stop.Token).ConfigureAwait(false);
            state.View = new ExtentView(replicas, LocalNodeId);
            lock (_lock)
            {
                RebuildFlushTargets();
            }
        }
        catch (Exception e)
        {
            Log.AllocationFailed(Name, extent, e.Message);
            try
            {
                await Task.Delay(TimeSpan.FromSeconds(1), _stop.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
            }
        }
        finally
        {
            SignalQueues();
        }
    }

    internal void HandleWriteFailures(ReplicatedVolumeQueue queue, VolumeOp op) => _ = HandleWriteFailuresAsync(queue, op);

    private async Task HandleWriteFailuresAsync(ReplicatedVolumeQueue queue, VolumeOp op)
    {
        bool ok = true;
        try
        {
            foreach (var failure in op.Failures)
            {
                var part = op.Parts[failure.Part];
                Log.ReplicaWriteFailed(Name, part.Extent, failure.NodeId, failure.Device, failure.Status.ToString());
                int failed = op.Failures.Count(f => f.Part == failure.Part);
                if (failed >= part.View!.InSync)
                {
                    // No replica took this part: they all still hold what they held, so none is marked out of sync
                    // (that would leave the extent with no copy to read or resync from). The write fails; the regions
                    // stay in the activity logs for reconciliation.
                    ok = false;
                    ReconcileLater(part.Extent, part.Regions);
                    continue;
                }

                Interlocked.Or(ref part.State.Missed[failure.Replica], part.Regions);
                if (!await UnlessRevokedAsync(MarkOutOfSyncAsync(part.Extent, part.State, failure.Replica)).ConfigureAwait(false))
                {
                    ok = false;
                }
            }

            for (int p = 0; p < op.PartCount; p++)
            {
                var view = op.Parts[p].State.View!;
                if (view.InSync < MinInSync)
                {
                    ok = false;
                    Log.TooFewInSync(Name, op.Parts[p].Extent, view.InSync, MinInSync);
                }
            }
        }
        catch (Exception e)
        {
            ok = false;
            Log.ControlFailed(Name, e.Message);
        }

        ok &= !IsFenced; // revoked or fenced meanwhile: no acknowledgement after that (the write may have landed)
        op.Result = ok ? (int)op.Outer.Length : -Errno.EIO;
        op.Error = ok ? BlockError.None : BlockError.Device;
        queue.Finish(op);
        queue.Signal();
    }

    internal void HandleFlushFailures(ReplicatedVolumeQueue queue, VolumeOp op) => _ = HandleFlushFailuresAsync(queue, op);

    private async Task HandleFlushFailuresAsync(ReplicatedVolumeQueue queue, VolumeOp op)
    {
        bool ok = true;
        try
        {
            foreach (var failure in op.Failures)
            {
                Log.ReplicaFlushFailed(Name, failure.NodeId, failure.Device, failure.Status.ToString());

                // Which writes did not become durable there is unknown: every extent it holds misses everything.
                for (long i = 0; i < _extents.Length; i++)
                {
                    var state = Volatile.Read(ref _extents[i]);
                    var view = state?.View;
                    if (view == null)
                    {
                        continue;
                    }

                    for (int r = 0; r < view.Replicas.Length; r++)
                    {
                        var target = view.Replicas[r];
                        if (target.NodeId == failure.NodeId && target.Device == failure.Device && target.State == ReplicaState.Resyncing)
                        {
                            // Not in sync yet: what it was sent may not be durable, so the resync copies it all again.
                            Interlocked.Or(ref state!.Missed[r], ulong.MaxValue);
                        }
                        else if (target.NodeId == failure.NodeId && target.Device == failure.Device && target.State == ReplicaState.InSync)
                        {
                            Interlocked.Or(ref state!.Missed[r], ulong.MaxValue);
                            ok &= await UnlessRevokedAsync(MarkOutOfSyncAsync(i, state, r)).ConfigureAwait(false);
                            ok &= state.View!.InSync >= MinInSync;
                        }
                    }
                }
            }
        }
        catch (Exception e)
        {
            ok = false;
            Log.ControlFailed(Name, e.Message);
        }

        ok &= !IsFenced;
        op.Result = ok ? 0 : -Errno.EIO;
        op.Error = ok ? BlockError.None : BlockError.Device;
        queue.Finish(op);
        queue.Signal();
    }

    // A request waiting for a replica to be marked out of sync gives up when the volume is revoked or fenced: the
    // marking may wait on a cluster store that cannot be reached, and the request is failed (EIO) rather than held.
    private async Task<bool> UnlessRevokedAsync(Task<bool> marking)
    {
        if (!marking.IsCompleted && await Task.WhenAny(marking, _revoked.Task).ConfigureAwait(false) != marking)
        {
            return false;
        }

        return await marking.ConfigureAwait(false);
    }

    // Marks a replica out of sync (once, however many writes failed on it at the same time).
    private Task<bool> MarkOutOfSyncAsync(long extent, ExtentState state, int replica)
    {
        lock (state)
        {
            var pending = state.Marking[replica];
            if (pending != null && !pending.IsCompleted)
            {
                return pending;
            }

            if (state.View!.Replicas[replica].State == ReplicaState.OutOfSync)
            {
                return Task.FromResult(true);
            }

            var task = SetStateAsync(extent, state, replica, ReplicaState.OutOfSync, _stop.Token);
            state.Marking[replica] = task;
            return task;
        }
    }

    private async Task<bool> SetStateAsync(long extent, ExtentState state, int replica, ReplicaState newState, CancellationToken cancellationToken)
    {
        try
        {
            ulong version = await _control.SetReplicaStateAsync(extent, replica, newState, cancellationToken).ConfigureAwait(false);
            RaiseStateVersion(version);
            lock (state)
            {
                state.View = state.View!.With(replica, newState, LocalNodeId);
            }

            if (newState == ReplicaState.OutOfSync)
            {
                Interlocked.Increment(ref _outOfSyncMarks);
                s_outOfSync.Add(1, _tag);
            }

            Log.ReplicaState(Name, extent, state.View!.Replicas[replica].NodeId, state.View.Replicas[replica].Device, newState.ToString());
            return true;
        }
        catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            Log.ControlFailed(Name, $"marking extent {extent} replica {replica} {newState}: {e.Message}");
            return false;
        }
    }

    private void RaiseStateVersion(ulong version)
    {
        long value = (long)version;
        long current;
        while ((current = Volatile.Read(ref _stateVersion)) < value && Interlocked.CompareExchange(ref _stateVersion, value, current) != current)
        {
        }
    }

    private void RebuildFlushTargets()
    {
        var set = new HashSet<(string, int)>();
        var list = new List<ReplicaTarget>();
        foreach (var state in _extents)
        {
            var view = state?.View;
            if (view == null)
            {
                continue;
            }

            foreach (var r in view.Replicas)
            {
                if (set.Add((r.NodeId, r.Device)))
                {
                    list.Add(r with { State = ReplicaState.InSync });
                }
            }
        }

        Volatile.Write(ref _flushTargets, [.. list]);
    }

    // Replica sets hold at most 16 (the spec's limit); the per-replica arrays of an extent are sized for that.
    private static int MaxReplicas(ReplicatedVolumeSpec spec) => 16;
}
