using System.Collections.Concurrent;
using System.Diagnostics;
using System.Numerics;
using Hci.Core.Blocks;
using Hci.Core.Cluster;
using Hci.Core.Reactors;

namespace Hci.Core.Replication;

/// <summary>
/// A queue of a <see cref="ReplicatedVolume"/>, owned by one thread (a front-end's reactor): it splits each request
/// by extent, sends writes to every in-sync replica of the extent in parallel through its own channels (the local
/// node's in process, the others over the node-to-node protocol) and completes when all have answered; reads go to
/// one in-sync replica (the local one first) and move to the next on a checksum mismatch or a failure.
/// </summary>
/// <remarks>
/// The steady state allocates nothing: volume requests, replica requests and checksum buffers are pooled per queue,
/// and answers come back on this thread (the channels are opened on the queue's reactor). Failures leave the data
/// path: the volume marks the replica out of sync in the cluster store (control plane, a task), then the request
/// comes back here to be completed.
/// </remarks>
internal sealed unsafe class ReplicatedVolumeQueue : BlockQueue, IReplicaCompletionHandler
{
    private readonly ReplicatedVolume _volume;
    private readonly Reactor? _reactor;
    private readonly Dictionary<string, ReplicaChannel> _channels = [];
    private readonly List<ReplicaChannel> _channelList = [];
    private volatile ReplicaChannel[] _channelSnapshot = [];
    private readonly Stack<VolumeOp> _ops = new();
    private readonly Stack<ReplicaRequest> _requests = new();
    private readonly List<VolumeOp> _parked = [];
    private readonly ConcurrentQueue<VolumeOp> _finished = new();
    private readonly int _segmentCapacity;
    private int _completions;

    public ReplicatedVolumeQueue(ReplicatedVolume volume, int depth)
        : base(volume)
    {
        _volume = volume;
        _reactor = Reactor.Current;
        _segmentCapacity = volume.Geometry.MaxSegments;
        for (int i = 0; i < Math.Min(depth, 64); i++)
        {
            _ops.Push(new VolumeOp());
        }

        volume.Register(this);
    }

    /// <inheritdoc/>
    public override void Wake()
    {
        foreach (var channel in _channelList)
        {
            if (channel is IWakeableChannel wakeable)
            {
                wakeable.Wake();
            }
        }
    }

    /// <inheritdoc/>
    /// <remarks>On a reactor, yes: peers answer on sockets the channels watch there, the local stores' device queues
    /// are the reactor's own queues, and the control plane wakes the reactor when it hands a request back.</remarks>
    public override bool CompletesThroughReactor => _reactor != null;

    /// <inheritdoc/>
    public override bool TrySetWakeSource(int fd) => false;

    /// <inheritdoc/>
    protected internal override RequestStage CompletionStage => RequestStage.Replication;

    /// <summary>Called by the volume (any thread) when a slow-path request is ready, or an extent it waited on is.</summary>
    internal void Signal()
    {
        if (_reactor != null)
        {
            _reactor.Wake();
        }

        Wake();
    }

    internal void Finish(VolumeOp op) => _finished.Enqueue(op);

    /// <inheritdoc/>
    protected override void SubmitCore(BlockRequest request)
    {
        var op = RentOp();
        op.Reset(request);
        op.StartTicks = Stopwatch.GetTimestamp();
        switch (request.Operation)
        {
            case BlockOperation.Read:
                StartRead(op);
                break;
            case BlockOperation.Write:
                if (!TryStartWrite(op))
                {
                    _parked.Add(op);
                }

                break;
            case BlockOperation.Flush:
                StartFlush(op);
                break;
            default:
                ReturnOp(op);
                CompleteLater(request, -Errno.EOPNOTSUPP, BlockError.Unsupported);
                break;
        }
    }

    /// <inheritdoc/>
    protected override int PollCore(int minCompletions, int timeoutMilliseconds)
    {
        _completions = 0;
        PollOnce();
        if (_completions >= minCompletions || timeoutMilliseconds == 0)
        {
            return _completions;
        }

        long deadline = timeoutMilliseconds < 0 ? long.MaxValue : Environment.TickCount64 + timeoutMilliseconds;
        var spin = default(SpinWait);
        while (_completions < minCompletions && Environment.TickCount64 < deadline)
        {
            if (spin.NextSpinWillYield && spin.Count > 100)
            {
                Thread.Sleep(0);
            }
            else
            {
                spin.SpinOnce(sleep1Threshold: -1);
            }

            // Remote channels read their sockets when the reactor's watch says so; this wait holds the reactor.
            PollOnce(inWait: true);
        }

        return _completions;
    }

    private void PollOnce(bool inWait = false)
    {
        while (_finished.TryDequeue(out var op))
        {
            Finish(op, op.Result, op.Error);
        }

        var channels = _channelList;
        for (int i = 0; i < channels.Count; i++)
        {
            if (inWait)
            {
                channels[i].PollInWait();
            }
            else
            {
                channels[i].Poll();
            }
        }

        int parked = _parked.Count;
        if (parked > 0)
        {
            for (int i = 0; i < parked; i++)
            {
                var op = _parked[0];
                _parked.RemoveAt(0);
                if (!TryStartWrite(op))
                {
                    _parked.Add(op);
                }
            }
        }
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        // Requests still parked (waiting for an allocation that never came) are answered, not dropped.
        foreach (var op in _parked)
        {
            Complete(op.Outer, -Errno.EIO, BlockError.Device);
        }

        _parked.Clear();
        foreach (var channel in _channelList)
        {
            channel.Dispose();
        }

        _channelList.Clear();
        _channelSnapshot = [];
        _channels.Clear();
        while (_ops.TryPop(out var op))
        {
            op.Dispose();
        }

        while (_requests.TryPop(out var request))
        {
            request.Dispose();
        }

        _volume.Unregister(this);
        base.Dispose(disposing);
    }

    // ---- reads

    private void StartRead(VolumeOp op)
    {
        if (_volume.IsFenced)
        {
            FinishLater(op, -Errno.EIO, BlockError.Device);
            return;
        }

        Split(op);
        op.Pending = 1; // held while submitting: a part that fails at once must not finish the request under us
        for (int p = 0; p < op.PartCount; p++)
        {
            ref var part = ref op.Parts[p];
            var state = _volume.TryGetExtent(part.Extent);
            var view = state?.View;
            if (view == null)
            {
                ZeroFill(op.Outer, part.OuterOffset, part.Length);
                part.Done = true;
                continue;
            }

            part.State = state!;
            part.View = view;
            op.Pending++;
            SubmitRead(op, p, view.ReadFirst);
        }

        if (--op.Pending == 0)
        {
            // Every part was answered without I/O (unwritten extents, or no replica to read): answer from Poll.
            bool failed = EndRead(op);
            FinishLater(op, failed ? -Errno.EIO : (int)op.Outer.Length, failed ? BlockError.Device : BlockError.None);
        }
    }

    private void SubmitRead(VolumeOp op, int p, int replica)
    {
        ref var part = ref op.Parts[p];
        if (replica < 0)
        {
            part.Failed = true;
            _volume.Log.NoReplicaToRead(_volume.Name, part.Extent);
            ReadPartDone(op);
            return;
        }

        part.Tried |= 1 << replica;
        var target = part.View!.Replicas[replica];
        var request = RentRequest();
        Fill(request, op, p, replica, ReplicaOperation.Read, target.Device);
        AddSegments(request, op.Outer, part.OuterOffset, part.Length);
        Channel(target.NodeId).Submit(request);
    }

    private void OnReadCompleted(VolumeOp op, int p, int replica, ReplicaRequest request)
    {
        var status = request.Status;
        ulong observed = request.ObservedEpoch;
        ReturnRequest(request);
        ref var part = ref op.Parts[p];
        if (status == ReplicaStatus.Ok)
        {
            part.Done = true;
            ReadPartDone(op);
            return;
        }

        if (status == ReplicaStatus.StaleEpoch)
        {
            _volume.OnFenced(observed);
            part.Failed = true;
            ReadPartDone(op);
            return;
        }

        if (status == ReplicaStatus.ChecksumMismatch)
        {
            part.Bad |= 1 << replica;
            _volume.CountChecksumMismatch(part.Extent, part.View!.Replicas[replica]);
        }

        // Another in-sync replica, local ones first; never one that is out of sync.
        SubmitRead(op, p, NextReadReplica(part.View!, part.Tried));
    }

    private int NextReadReplica(ExtentView view, int tried)
    {
        int fallback = -1;
        for (int i = 0; i < view.Replicas.Length; i++)
        {
            if ((tried & (1 << i)) != 0 || view.Replicas[i].State != ReplicaState.InSync)
            {
                continue;
            }

            if (view.Replicas[i].NodeId == _volume.LocalNodeId)
            {
                return i;
            }

            if (fallback < 0)
            {
                fallback = i;
            }
        }

        return fallback;
    }

    private void ReadPartDone(VolumeOp op)
    {
        if (--op.Pending > 0)
        {
            return;
        }

        bool failed = EndRead(op);
        Finish(op, failed ? -Errno.EIO : (int)op.Outer.Length, failed ? BlockError.Device : BlockError.None);
    }

    // True when a part failed; starts the repair of parts served after a checksum mismatch.
    private bool EndRead(VolumeOp op)
    {
        bool failed = false;
        for (int p = 0; p < op.PartCount; p++)
        {
            ref var part = ref op.Parts[p];
            failed |= part.Failed;
            if (!part.Failed && part.Bad != 0)
            {
                // Served from a good copy: rewrite the bad ones from it, off the data path.
                _volume.RepairLater(part.Extent, part.Offset, part.Length, part.Bad);
            }
        }

        return failed;
    }

    // ---- writes

    private bool TryStartWrite(VolumeOp op)
    {
        if (_volume.IsFenced)
        {
            FinishLater(op, -Errno.EIO, BlockError.Device);
            return true;
        }

        if (op.PartCount == 0)
        {
            Split(op);
        }

        // Announce the writes before looking at the extents' state: a control-plane change (cleaning, repair, resync)
        // that sees no write in flight after it raised its flag knows every later write sees the flag.
        for (int p = 0; p < op.PartCount; p++)
        {
            ref var part = ref op.Parts[p];
            part.State = _volume.GetExtent(part.Extent);
            Interlocked.Increment(ref part.State.InFlight);
            CountRegions(part.State, part.Regions, 1);
        }

        for (int p = 0; p < op.PartCount; p++)
        {
            ref var part = ref op.Parts[p];
            if (part.State.Cleaning != 0 || (Volatile.Read(ref part.State.HeldRegions) & part.Regions) != 0 || part.State.View == null)
            {
                for (int q = 0; q < op.PartCount; q++)
                {
                    Interlocked.Decrement(ref op.Parts[q].State.InFlight);
                    CountRegions(op.Parts[q].State, op.Parts[q].Regions, -1);
                }

                if (part.State.View == null)
                {
                    _volume.EnsureAllocated(part.Extent, part.State);
                }

                return false;
            }
        }

        op.Counted = true;
        ComputeChecksums(op);
        for (int p = 0; p < op.PartCount; p++)
        {
            ref var part = ref op.Parts[p];
            var view = part.State.View!;
            part.View = view;
            if (view.InSync < _volume.MinInSync)
            {
                _volume.Log.TooFewInSync(_volume.Name, part.Extent, view.InSync, _volume.MinInSync);
                FinishLater(op, -Errno.EIO, BlockError.Device);
                return true;
            }

            Interlocked.Increment(ref part.State.Started);
            Interlocked.Or(ref part.State.Written, part.Regions);
        }

        ulong epoch = _volume.Epoch;
        for (int p = 0; p < op.PartCount; p++)
        {
            ref var part = ref op.Parts[p];
            var replicas = part.View!.Replicas;
            for (int r = 0; r < replicas.Length; r++)
            {
                // A replica being resynced (or joining by a move) takes the write too, so the regions already copied
                // stay current and the copy converges under load; it is never read until it is in sync.
                if (replicas[r].State == ReplicaState.OutOfSync)
                {
                    Interlocked.Or(ref part.State.Missed[r], part.Regions);
                    continue;
                }

                op.Pending++;
            }
        }

        // Remote replicas first: their path (a round trip and another node's device) is the longer one, and the local
        // submission costs the reactor a system call and a device kick that would otherwise delay the sends.
        string local = _volume.LocalNodeId;
        for (int pass = 0; pass < 2; pass++)
        {
            for (int p = 0; p < op.PartCount; p++)
            {
                ref var part = ref op.Parts[p];
                var replicas = part.View!.Replicas;
                for (int r = 0; r < replicas.Length; r++)
                {
                    if (replicas[r].State == ReplicaState.OutOfSync || (replicas[r].NodeId == local) != (pass == 1))
                    {
                        continue;
                    }

                    SubmitWrite(op, p, r, epoch);
                }
            }
        }

        return true;
    }

    private void SubmitWrite(VolumeOp op, int p, int r, ulong epoch)
    {
        ref var part = ref op.Parts[p];
        var target = part.View!.Replicas[r];
        var request = RentRequest();
        Fill(request, op, p, r, ReplicaOperation.Write, target.Device);
        request.Epoch = epoch;
        request.Flags = op.Outer.Flags;
        request.Checksums = op.Checksums + (part.OuterOffset / ReplicaGeometry.BlockSize);
        AddSegments(request, op.Outer, part.OuterOffset, part.Length);
        Channel(target.NodeId).Submit(request);
    }

    private void OnWriteCompleted(VolumeOp op, int p, int replica, ReplicaRequest request)
    {
        var status = request.Status;
        ulong observed = request.ObservedEpoch;
        int device = request.Device;
        ReturnRequest(request);
        if (status == ReplicaStatus.StaleEpoch)
        {
            op.Fenced = true;
            _volume.OnFenced(observed);
        }
        else if (status != ReplicaStatus.Ok)
        {
            ref var part = ref op.Parts[p];
            var target = part.View!.Replicas[replica];
            if (target.State == ReplicaState.InSync)
            {
                op.Failures.Add(new OpFailure(p, replica, status, target.NodeId, device));
            }
            else
            {
                // A replica being resynced missed it: the resync copies the regions again before it is in sync.
                Interlocked.Or(ref part.State.Missed[replica], part.Regions);
            }
        }

        if (--op.Pending > 0)
        {
            return;
        }

        if (op.Fenced)
        {
            Finish(op, -Errno.EIO, BlockError.Device);
        }
        else if (op.Failures.Count == 0)
        {
            Finish(op, (int)op.Outer.Length, BlockError.None);
        }
        else
        {
            // Slow path: the failed replicas are marked out of sync in the store before the write is acknowledged.
            _volume.HandleWriteFailures(this, op);
        }
    }

    // ---- flushes

    private void StartFlush(VolumeOp op)
    {
        if (_volume.IsFenced)
        {
            FinishLater(op, -Errno.EIO, BlockError.Device);
            return;
        }

        var targets = _volume.FlushTargets;
        ulong epoch = _volume.Epoch;
        op.FlushTargets = targets;
        op.Pending = targets.Length;
        if (targets.Length == 0)
        {
            FinishLater(op, 0, BlockError.None);
            return;
        }

        for (int i = 0; i < targets.Length; i++)
        {
            var request = RentRequest();
            request.Reset();
            request.Operation = ReplicaOperation.Flush;
            request.VolumeId = _volume.VolumeId;
            request.Device = targets[i].Device;
            request.Epoch = epoch;
            request.Handler = this;
            request.UserState = op;
            request.UserTag = i;
            Channel(targets[i].NodeId).Submit(request);
        }
    }

    private void OnFlushCompleted(VolumeOp op, int target, ReplicaRequest request)
    {
        var status = request.Status;
        ulong observed = request.ObservedEpoch;
        ReturnRequest(request);
        if (status == ReplicaStatus.StaleEpoch)
        {
            op.Fenced = true;
            _volume.OnFenced(observed);
        }
        else if (status != ReplicaStatus.Ok)
        {
            var t = op.FlushTargets[target];
            op.Failures.Add(new OpFailure(-1, -1, status, t.NodeId, t.Device));
        }

        if (--op.Pending > 0)
        {
            return;
        }

        if (op.Fenced)
        {
            Finish(op, -Errno.EIO, BlockError.Device);
        }
        else if (op.Failures.Count == 0)
        {
            Finish(op, 0, BlockError.None);
        }
        else
        {
            _volume.HandleFlushFailures(this, op);
        }
    }

    // ---- completions

    void IReplicaCompletionHandler.OnReplicaCompleted(ReplicaRequest request)
    {
        var op = (VolumeOp)request.UserState!;
        int tag = (int)request.UserTag;
        switch (op.Outer.Operation)
        {
            case BlockOperation.Read:
                OnReadCompleted(op, tag & 0xFF, tag >> 8, request);
                break;
            case BlockOperation.Write:
                OnWriteCompleted(op, tag & 0xFF, tag >> 8, request);
                break;
            default:
                OnFlushCompleted(op, tag, request);
                break;
        }
    }

    /// <summary>Client reads' and writes' latency here, summed (Stopwatch ticks): written on the owner thread only,
    /// before <see cref="LatencyCount"/>; what recovery's pace watches.</summary>
    internal long LatencyTicks;

    /// <summary>Client reads and writes completed here.</summary>
    internal long LatencyCount;

    private void Finish(VolumeOp op, int result, BlockError error)
    {
        if (result >= 0 && op.Outer.Operation != BlockOperation.Flush)
        {
            Volatile.Write(ref LatencyTicks, LatencyTicks + (Stopwatch.GetTimestamp() - op.StartTicks));
            Volatile.Write(ref LatencyCount, LatencyCount + 1);
        }

        if (op.Counted)
        {
            for (int p = 0; p < op.PartCount; p++)
            {
                Interlocked.Decrement(ref op.Parts[p].State.InFlight);
                CountRegions(op.Parts[p].State, op.Parts[p].Regions, -1);
            }
        }

        var outer = op.Outer;
        ReturnOp(op);
        _completions++;
        Complete(outer, result, error);
    }

    private void FinishLater(VolumeOp op, int result, BlockError error)
    {
        op.Result = result;
        op.Error = error;
        _finished.Enqueue(op);
    }

    // ---- helpers

    // Writes in flight per region, for region copies that hold one region's writes and let the others go on.
    private static void CountRegions(ExtentState state, ulong regions, int delta)
    {
        while (regions != 0)
        {
            Interlocked.Add(ref state.RegionInFlight[BitOperations.TrailingZeroCount(regions)], delta);
            regions &= regions - 1;
        }
    }

    private void Split(VolumeOp op)
    {
        long extentSize = _volume.ExtentSize;
        long regionSize = extentSize / ReplicaGeometry.RegionsPerExtent;
        long offset = op.Outer.Offset;
        long left = op.Outer.Length;
        int outerOffset = 0;
        int count = 0;
        while (left > 0)
        {
            long extent = offset / extentSize;
            long within = offset - (extent * extentSize);
            int length = (int)Math.Min(left, extentSize - within);
            ref var part = ref op.Parts[count++];
            part.Extent = extent;
            part.Offset = within;
            part.Length = length;
            part.OuterOffset = outerOffset;
            part.Regions = ReplicaGeometry.RegionMask(within, length, regionSize);
            offset += length;
            left -= length;
            outerOffset += length;
        }

        op.PartCount = count;
    }

    private void Fill(ReplicaRequest request, VolumeOp op, int part, int replica, ReplicaOperation operation, int device)
    {
        ref var p = ref op.Parts[part];
        request.Reset();
        request.Operation = operation;
        request.VolumeId = _volume.VolumeId;
        request.Extent = p.Extent;
        request.Offset = p.Offset;
        request.Device = device;
        request.Epoch = _volume.Epoch;
        request.Class = op.Outer.Class;
        request.Handler = this;
        request.UserState = op;
        request.UserTag = part | (replica << 8);
    }

    private static void AddSegments(ReplicaRequest request, BlockRequest outer, int from, int length)
    {
        int skip = from;
        int left = length;
        foreach (var segment in outer.Segments)
        {
            int segmentLength = (int)segment.Length;
            if (skip >= segmentLength)
            {
                skip -= segmentLength;
                continue;
            }

            int take = Math.Min(segmentLength - skip, left);
            request.AddSegment((byte*)segment.Address + skip, take);
            skip = 0;
            left -= take;
            if (left == 0)
            {
                break;
            }
        }
    }

    private static void ZeroFill(BlockRequest outer, int from, int length)
    {
        int skip = from;
        int left = length;
        foreach (var segment in outer.Segments)
        {
            int segmentLength = (int)segment.Length;
            if (skip >= segmentLength)
            {
                skip -= segmentLength;
                continue;
            }

            int take = Math.Min(segmentLength - skip, left);
            new Span<byte>((byte*)segment.Address + skip, take).Clear();
            skip = 0;
            left -= take;
            if (left == 0)
            {
                break;
            }
        }
    }

    // One CRC-32C per 4 KiB block of the whole request, computed once for every replica (blocks may straddle segments).
    private static void ComputeChecksums(VolumeOp op)
    {
        var checksums = op.Checksums;
        int block = 0;
        int inBlock = 0;
        uint crc = ~0u;
        foreach (var segment in op.Outer.Segments)
        {
            byte* p = (byte*)segment.Address;
            int left = (int)segment.Length;
            while (left > 0)
            {
                int take = Math.Min(left, ReplicaGeometry.BlockSize - inBlock);
                crc = Storage.Crc32C.Append(crc, p, take);
                p += take;
                left -= take;
                inBlock += take;
                if (inBlock == ReplicaGeometry.BlockSize)
                {
                    checksums[block++] = ~crc;
                    crc = ~0u;
                    inBlock = 0;
                }
            }
        }
    }

    private ReplicaChannel Channel(string nodeId)
    {
        if (!_channels.TryGetValue(nodeId, out var channel))
        {
            channel = _volume.Connector.Open(nodeId, _reactor);
            _channels.Add(nodeId, channel);
            _channelList.Add(channel);
            _channelSnapshot = [.. _channelList];
        }

        return channel;
    }

    /// <summary>False while one of this queue's channels to <paramref name="nodeId"/> is not connected (any thread; a
    /// recent view): a resync waits for the data path to reach a node, not only the control lane, or a flush the data
    /// path fails to send there meanwhile makes the resync copy its extents whole.</summary>
    internal bool Reaches(string nodeId)
    {
        foreach (var channel in _channelSnapshot)
        {
            if (channel.NodeId == nodeId && !channel.IsConnected)
            {
                return false;
            }
        }

        return true;
    }

    private VolumeOp RentOp() => _ops.TryPop(out var op) ? op : new VolumeOp();

    private void ReturnOp(VolumeOp op)
    {
        op.Outer = null!;
        _ops.Push(op);
    }

    private ReplicaRequest RentRequest() => _requests.TryPop(out var request) ? request : new ReplicaRequest(_segmentCapacity);

    private void ReturnRequest(ReplicaRequest request)
    {
        request.UserState = null;
        _requests.Push(request);
    }
}

/// <summary>A channel whose owner can be woken from a blocking wait.</summary>
internal interface IWakeableChannel
{
    void Wake();
}
