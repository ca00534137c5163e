using Hci.Core.Cluster;
using Hci.Core.Replication;

namespace Hci.Samples.Shared;

// Scrubs asked for by hand (hci volume scrub): at every poll the node looks for requests on the volumes it owns, runs
// each one in the background, and writes its progress (at most every second) and its result into the request's key.
internal sealed partial class ClusterNode
{
    private static readonly TimeSpan ScrubProgressInterval = TimeSpan.FromSeconds(1);

    private readonly Dictionary<string, (string RequestId, Task Run)> _scrubs = [];

    private async Task PollScrubsAsync(CancellationToken cancellationToken)
    {
        foreach (var (name, running) in _scrubs.ToArray())
        {
            if (running.Run.IsCompleted)
            {
                _scrubs.Remove(name);
            }
        }

        var records = await _catalog!.ListScrubsAsync(cancellationToken).ConfigureAwait(false);
        foreach (var record in records)
        {
            // A request, or one left running by a node that no longer runs it (this node restarted, or the volume moved).
            if (record.State is not (ScrubState.Requested or ScrubState.Running)
                || !_attached.TryGetValue(record.Volume, out var attached)
                || (_scrubs.TryGetValue(record.Volume, out var current) && current.RequestId == record.RequestId))
            {
                continue;
            }

            if (_scrubs.ContainsKey(record.Volume))
            {
                continue; // the previous scrub is still finishing; pick this one up at a next poll
            }

            var volume = attached.Volume;
            var start = record with { State = ScrubState.Running, Node = NodeId, UpdatedAt = DateTimeOffset.UtcNow };
            if (!await _catalog.UpdateScrubAsync(start, takeOver: true, cancellationToken).ConfigureAwait(false))
            {
                continue;
            }

            SampleLog.ScrubStarting(_logger, NodeId, record.Volume, record.RequestId);
            _scrubs[record.Volume] = (record.RequestId, Task.Run(() => RunScrubAsync(volume, start, _stop.Token), CancellationToken.None));
        }
    }

    private async Task RunScrubAsync(ReplicatedVolume volume, ScrubRecord record, CancellationToken cancellationToken)
    {
        var catalog = _catalog!;
        var progress = new ScrubReporter(catalog, record, NodeId, cancellationToken);
        try
        {
            var result = await volume.ScrubAsync(progress, cancellationToken).ConfigureAwait(false);
            await progress.DrainAsync().ConfigureAwait(false);
            await catalog.UpdateScrubAsync(record.WithResult(NodeId, result, DateTimeOffset.UtcNow), cancellationToken: cancellationToken).ConfigureAwait(false);
            SampleLog.ScrubDone(_logger, NodeId, volume.Name, result.BadBlocks, result.DivergingBlocks, result.RepairedBlocks, result.UnrecoverableBlocks);
        }
        catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            await progress.DrainAsync().ConfigureAwait(false);
            SampleLog.ScrubFailed(_logger, NodeId, volume.Name, e.Message);
            try
            {
                await catalog.UpdateScrubAsync(record with { State = ScrubState.Failed, Node = NodeId, UpdatedAt = DateTimeOffset.UtcNow, Error = e.Message }, cancellationToken: cancellationToken).ConfigureAwait(false);
            }
            catch (Exception inner) when (inner is ClusterCatalogException or ClusterStoreException or OperationCanceledException)
            {
                SampleLog.NodeSyncFailed(_logger, NodeId, $"recording the failed scrub of {volume.Name}: {inner.Message}");
            }
        }
        catch (OperationCanceledException)
        {
            // The node is stopping: the record stays Running, and the volume's next owner (or this node, restarted)
            // runs the request again.
        }
    }

    /// <summary>Writes a running scrub's progress into its record, at most every second, one write at a time.</summary>
    private sealed class ScrubReporter(ClusterCatalog catalog, ScrubRecord record, string node, CancellationToken cancellationToken) : IProgress<ScrubProgress>
    {
        private readonly Lock _lock = new();
        private DateTimeOffset _last = DateTimeOffset.MinValue;
        private Task _writing = Task.CompletedTask;

        public void Report(ScrubProgress value)
        {
            var now = DateTimeOffset.UtcNow;
            lock (_lock)
            {
                if (now - _last < ScrubProgressInterval || !_writing.IsCompleted)
                {
                    return;
                }

                _last = now;
                _writing = WriteAsync(record.WithProgress(node, value, now));
            }
        }

        public Task DrainAsync()
        {
            lock (_lock)
            {
                return _writing;
            }
        }

        private async Task WriteAsync(ScrubRecord update)
        {
            try
            {
                await catalog.UpdateScrubAsync(update, cancellationToken: cancellationToken).ConfigureAwait(false);
            }
            catch (Exception e) when (e is ClusterCatalogException or ClusterStoreException or OperationCanceledException)
            {
                // Progress is best effort; the result is written at the end.
            }
        }
    }
}
