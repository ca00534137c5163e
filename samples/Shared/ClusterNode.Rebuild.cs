using System.Diagnostics;
using Hci.Core.Cluster;
using Hci.Core.Replication;

namespace Hci.Samples.Shared;

// Rebuild: every node records which nodes are down and since when (hci/down/<node>, the first writer's time), so
// every node and `hci cluster status` count down to the same moment. A node down longer than --rebuild-after is lost:
// the owner of every attached volume replaces each of its replicas there by one that placement chooses over the live
// nodes, copied from an in-sync replica (ReplicatedVolume.ReplaceReplicaAsync), --rebuild-parallel extents at a time,
// and reports its progress to the store (hci/rebuild/<volume>) once a second. A detached volume has no owner to do
// this: a detach stops its rebuild (the moves in flight rolled back), which goes on when it is attached again (hci
// cluster status lists it meanwhile). The same moves drain the nodes marked draining (hci node drain), and, while
// every node is up, bring extents where placement now wants them (a node joined): only the replicas placement moved,
// each once.
internal sealed partial class ClusterNode
{
    private static readonly TimeSpan RebuildCheckInterval = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan ProgressInterval = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan BalanceInterval = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan SweepInterval = TimeSpan.FromMinutes(1);

    // The rebuild or rebalance of each attached volume that has one running, and what stops it (a detach, the node's end).
    private readonly Dictionary<string, (Task Task, CancellationTokenSource Stop)> _rebuilds = [];
    private readonly HashSet<string> _announcedDown = [];
    private long _nextRebuildCheck;
    private long _nextBalance;
    private long _nextSweep;

    // Called from the node's loop: records down nodes, and starts a rebuild of every attached volume that holds a
    // replica on a node that has been down past the interval.
    private async Task RebuildTickAsync(CancellationToken cancellationToken)
    {
        long now = Stopwatch.GetTimestamp();
        if (now < _nextRebuildCheck)
        {
            return;
        }

        _nextRebuildCheck = now + (long)(RebuildCheckInterval.TotalSeconds * Stopwatch.Frequency);
        var down = await _catalog!.UpdateDownNodesAsync(_options.RebuildAfter, cancellationToken).ConfigureAwait(false);
        foreach (var (node, since) in down)
        {
            if (_announcedDown.Add(node))
            {
                SampleLog.NodeDown(_logger, NodeId, node, since.Since, since.RebuildAt);
            }
        }

        _announcedDown.RemoveWhere(n => !down.ContainsKey(n));
        foreach (var (name, rebuild) in _rebuilds.ToArray())
        {
            if (rebuild.Task.IsCompleted)
            {
                _rebuilds.Remove(name);
                rebuild.Stop.Dispose();
            }
        }

        var clock = DateTimeOffset.UtcNow;
        var lost = down.Where(d => clock >= d.Value.RebuildAt).Select(d => d.Key).ToHashSet(StringComparer.Ordinal);
        var draining = (await _catalog.ListDrainingNodesAsync(cancellationToken).ConfigureAwait(false)).ToHashSet(StringComparer.Ordinal);
        bool balance = down.Count == 0 && now >= _nextBalance;
        if (balance)
        {
            _nextBalance = now + (long)(BalanceInterval.TotalSeconds * Stopwatch.Frequency);
        }

        // With every node up, now and then: free the slots moves left on stores that were away (see SweepAsync).
        bool sweep = balance && now >= _nextSweep;
        if (sweep)
        {
            _nextSweep = now + (long)(SweepInterval.TotalSeconds * Stopwatch.Frequency);
        }

        if (lost.Count == 0 && draining.Count == 0 && !balance)
        {
            return;
        }

        var away = lost.Union(draining).ToHashSet(StringComparer.Ordinal);
        var exclude = down.Keys.Union(draining).ToHashSet(StringComparer.Ordinal);
        foreach (var (name, (volume, _)) in _attached)
        {
            if (_rebuilds.ContainsKey(name) || volume.IsFenced)
            {
                continue;
            }

            bool moveAway = volume.GetExtents().Any(e => e.Replicas.Any(r => away.Contains(r.NodeId)));
            if (moveAway || balance)
            {
                var stop = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
                bool sweepThis = sweep && !moveAway;
                _rebuilds[name] = (Task.Run(async () =>
                {
                    if (sweepThis)
                    {
                        await SweepAsync(name, volume, stop.Token).ConfigureAwait(false);
                    }

                    await RebuildVolumeAsync(name, volume, lost, draining, exclude, rebalance: !moveAway, stop.Token).ConfigureAwait(false);
                }, CancellationToken.None), stop);
            }
        }
    }

    // Before a volume closes (detached, moved, fenced, the node's end): its rebuild stops, its moves in flight rolled
    // back, so that nothing copies for a volume this node no longer serves.
    private async Task StopRebuildAsync(string name)
    {
        if (_rebuilds.Remove(name, out var rebuild))
        {
            await rebuild.Stop.CancelAsync().ConfigureAwait(false);
            await rebuild.Task.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            rebuild.Stop.Dispose();
        }
    }

    // A store that was away (down, cut off) while a move took a replica off it keeps that replica's slot: the drop
    // could not reach it. With every node up, the owner asks each store which extents of the volume it holds and
    // frees those whose sets no longer include it (ReplicatedVolume.DropOrphanSlotsAsync, moves held off per extent).
    private async Task SweepAsync(string name, ReplicatedVolume volume, CancellationToken cancellationToken)
    {
        try
        {
            var map = await _catalog!.GetMapAsync(cancellationToken).ConfigureAwait(false);
            foreach (var device in map.Devices.Where(d => map.FindNode(d.NodeId) is { Alive: true }))
            {
                try
                {
                    await volume.DropOrphanSlotsAsync(device.NodeId, device.Index, cancellationToken).ConfigureAwait(false);
                }
                catch (ReplicationException e)
                {
                    SampleLog.NodeSyncFailed(_logger, NodeId, $"freeing orphaned slots of {name} on {device.Id}: {e.Message}");
                }
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
        catch (Exception e) when (e is ClusterStoreException or ClusterCatalogException)
        {
            SampleLog.NodeSyncFailed(_logger, NodeId, $"freeing orphaned slots of {name}: {e.Message}");
        }
    }

    private async Task RebuildVolumeAsync(string name, ReplicatedVolume volume, HashSet<string> lost, HashSet<string> draining, HashSet<string> exclude, bool rebalance, CancellationToken cancellationToken)
    {
        try
        {
            var record = await _catalog!.GetVolumeAsync(name, cancellationToken).ConfigureAwait(false);
            if (record == null)
            {
                return;
            }

            var planner = await _catalog.GetReplacementPlannerAsync(record.DomainLevel, exclude, cancellationToken: cancellationToken).ConfigureAwait(false);
            var balancer = rebalance ? await _catalog.GetReplacementPlannerAsync(record.DomainLevel, draining, includeDown: true, cancellationToken).ConfigureAwait(false) : null;
            var moves = new List<(long Extent, ReplicaTarget From, ReplicaTarget To)>();
            var extras = new List<(long Extent, ReplicaTarget Replica)>();
            long unplaceable = 0;
            foreach (var extent in volume.GetExtents())
            {
                if (balancer != null)
                {
                    // Only healthy extents are rebalanced: a resync comes first.
                    if (extent.Replicas.All(r => r.State == ReplicaState.InSync) && extent.Replicas.Count == record.Replicas)
                    {
                        foreach (var (from, to) in balancer.Rebalance(record.Id, extent.Index, record.Replicas, extent.Replicas))
                        {
                            moves.Add((extent.Index, from, new ReplicaTarget(to.NodeId, to.Index, ReplicaState.OutOfSync)));
                        }
                    }

                    continue;
                }

                var keep = extent.Replicas.Where(r => !lost.Contains(r.NodeId) && !draining.Contains(r.NodeId)).ToList();
                foreach (var gone in extent.Replicas.Where(r => lost.Contains(r.NodeId) || draining.Contains(r.NodeId)))
                {
                    if (keep.Count(r => r.State == ReplicaState.InSync) >= record.Replicas)
                    {
                        extras.Add((extent.Index, gone)); // an earlier move left its replacement in sync already
                        continue;
                    }

                    var device = planner.Choose(record.Id, extent.Index, record.Replicas, keep);
                    if (device == null)
                    {
                        unplaceable++;
                        continue;
                    }

                    var to = new ReplicaTarget(device.NodeId, device.Index, ReplicaState.OutOfSync);
                    keep.Add(to);
                    moves.Add((extent.Index, gone, to));
                }
            }

            if (unplaceable > 0)
            {
                SampleLog.RebuildUnplaceable(_logger, NodeId, name, unplaceable);
            }

            foreach (var (extent, replica) in extras)
            {
                await volume.RemoveReplicaAsync(extent, replica, record.Replicas, cancellationToken).ConfigureAwait(false);
            }

            if (moves.Count == 0)
            {
                return;
            }

            string reason = rebalance ? "rebalance" : lost.Count > 0 ? "rebuild" : "drain";
            var lostList = rebalance ? [] : lost.Union(draining).Order(StringComparer.Ordinal).ToArray();
            SampleLog.RebuildStarted(_logger, NodeId, reason, name, moves.Count, moves.Count * volume.ExtentSize, lostList.Length == 0 ? "-" : string.Join(",", lostList), _options.RebuildParallel);
            var started = DateTimeOffset.UtcNow;
            var watch = Stopwatch.StartNew();
            long done = 0;
            long failed = 0;
            RebuildProgress Progress(bool finished) => new()
            {
                Volume = name,
                Owner = NodeId,
                Reason = reason,
                LostNodes = lostList,
                ExtentsTotal = moves.Count,
                ExtentsDone = Interlocked.Read(ref done),
                ExtentsFailed = Interlocked.Read(ref failed),
                BytesTotal = moves.Count * volume.ExtentSize,
                BytesDone = Interlocked.Read(ref done) * volume.ExtentSize,
                BytesPerSecond = Interlocked.Read(ref done) * volume.ExtentSize / Math.Max(watch.Elapsed.TotalSeconds, 0.001),
                StartedAt = started,
                UpdatedAt = DateTimeOffset.UtcNow,
                Finished = finished,
            };

            using var reporting = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            var reporter = Task.Run(async () =>
            {
                while (!reporting.IsCancellationRequested)
                {
                    try
                    {
                        await _catalog.PutRebuildProgressAsync(Progress(false), reporting.Token).ConfigureAwait(false);
                        await Task.Delay(ProgressInterval, reporting.Token).ConfigureAwait(false);
                    }
                    catch (OperationCanceledException)
                    {
                        return;
                    }
                    catch (Exception e) when (e is ClusterStoreException or ClusterCatalogException)
                    {
                        SampleLog.NodeSyncFailed(_logger, NodeId, $"reporting rebuild progress of {name}: {e.Message}");
                    }
                }
            }, CancellationToken.None);

            // Moves in extent order, several at once: each extent's set came from placement, so the sources and
            // targets of the moves in flight are spread over the nodes.
            await Parallel.ForEachAsync(moves, new ParallelOptions { MaxDegreeOfParallelism = _options.RebuildParallel, CancellationToken = cancellationToken }, async (move, token) =>
            {
                try
                {
                    await volume.ReplaceReplicaAsync(move.Extent, move.From, move.To, token).ConfigureAwait(false);
                    Interlocked.Increment(ref done);
                }
                catch (ReplicationException)
                {
                    Interlocked.Increment(ref failed); // logged by the volume; tried again at the next check
                }
            }).ConfigureAwait(false);

            await reporting.CancelAsync().ConfigureAwait(false);
            await reporter.ConfigureAwait(false);
            var final = Progress(failed == 0);
            await _catalog.PutRebuildProgressAsync(final, cancellationToken).ConfigureAwait(false);
            SampleLog.RebuildFinished(_logger, NodeId, reason, name, final.ExtentsDone, final.ExtentsFailed, final.BytesDone, watch.Elapsed.TotalSeconds, final.BytesPerSecond / 1e6);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
        catch (Exception e)
        {
            SampleLog.NodeSyncFailed(_logger, NodeId, $"rebuilding {name}: {e.Message}");
        }
    }
}
