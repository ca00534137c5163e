using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Runtime.InteropServices;
using Hci.Core.Blocks;
using Hci.Core.Cluster;

namespace Hci.Core.Replication;

// Scrub: read every in-sync replica of every allocated extent, check each block against its stored checksum and the
// replicas' checksums against each other, and rewrite bad or diverging copies from the good majority. It runs as
// control-plane code on the volume's control lane, as Background I/O, paced to ScrubBytesPerSecond.
//
// Each chunk (up to 1 MiB of an extent) is first read without holding writes: the stored checksums of every in-sync
// replica (metadata only) and the data of each (which the store refuses, ChecksumMismatch, when a block does not
// match its checksum; a refused chunk is read again in 64 KiB pieces, then block by block, to find which blocks).
// Blocks whose checksums differ between replicas, and the blocks a replica refused, are suspects: a client write
// racing the reads can make replicas differ for a moment, so suspects are read again, block by block on every
// replica, with the extent's writes held (no write in flight, new ones wait), and only what still differs then is
// decided and rewritten, before the writes go on.
public sealed partial class ReplicatedVolume
{
    // A hold re-reads at most this many suspect blocks on every replica before it lets writes go on again.
    private const int SuspectsPerHold = 64;

    private readonly SemaphoreSlim _scrubGate = new(1, 1);

    /// <summary>
    /// Scrubs the volume now: reads every in-sync replica of every allocated extent, checks each block against its
    /// stored checksum and the replicas' checksums against each other, and rewrites a bad or diverging copy from a
    /// replica holding the data of the good majority; a block with no good majority is reported, never rewritten by
    /// guessing. Runs at <see cref="ReplicatedVolumeOptions.ScrubBytesPerSecond"/>, as Background I/O, while the
    /// volume serves; client writes to a block are held only while its copies are re-checked and rewritten.
    /// </summary>
    /// <param name="progress">Hears how far the scrub has got, after each chunk of up to 1 MiB per replica; null for none.</param>
    /// <param name="cancellationToken">Stops the scrub (the result so far is lost; nothing half-written is left).</param>
    /// <returns>What the scrub found and repaired.</returns>
    /// <exception cref="ReplicationException">The volume was fenced by a newer owner.</exception>
    /// <exception cref="ObjectDisposedException">The volume was detached.</exception>
    /// <remarks>One scrub runs at a time per volume: a second call waits for the first (the background one included).</remarks>
    public async Task<ScrubResult> ScrubAsync(IProgress<ScrubProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _detached) != 0, this);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _stop.Token);
        var token = linked.Token;
        await _scrubGate.WaitAsync(token).ConfigureAwait(false);
        try
        {
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _detached) != 0, this);
            return await ScrubCoreAsync(progress, token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested && _stop.IsCancellationRequested)
        {
            throw new ObjectDisposedException(Name, "The volume was detached while it was being scrubbed.");
        }
        finally
        {
            _scrubGate.Release();
        }
    }

    private async Task<ScrubResult> ScrubCoreAsync(IProgress<ScrubProgress>? progress, CancellationToken cancellationToken)
    {
        ThrowIfFenced();
        var time = _options.TimeProvider;
        long started = time.GetTimestamp();
        var extents = new List<long>();
        for (long i = 0; i < _extents.Length; i++)
        {
            if (Volatile.Read(ref _extents[i])?.View != null)
            {
                extents.Add(i);
            }
        }

        var tally = new ScrubTally(this, extents.Count, progress);
        ReplicationLog.ScrubStarted(Log.Logger, Name, extents.Count, _options.ScrubBytesPerSecond);
        int chunk = (int)Math.Min(ExtentSize, ReplicaGeometry.MaxTransfer);
        using var data = new NativeBuffer(chunk);
        using var sums = new NativeBuffer(chunk / ReplicaGeometry.BlockSize * sizeof(uint));
        var pacer = new ScrubPacer(time, _options.ScrubBytesPerSecond);
        foreach (long extent in extents)
        {
            var state = Volatile.Read(ref _extents[extent])!;
            for (long offset = 0; offset < ExtentSize; offset += chunk)
            {
                cancellationToken.ThrowIfCancellationRequested();
                ThrowIfFenced();
                await ScrubChunkAsync(extent, state, offset, chunk, data, sums, tally, pacer, cancellationToken).ConfigureAwait(false);
                tally.Report();
            }

            tally.ExtentsChecked++;
            tally.Report();
        }

        var result = tally.ToResult(time.GetElapsedTime(started));
        ReplicationLog.ScrubFinished(Log.Logger, Name, result.Duration.TotalSeconds, result.ExtentsChecked, result.BytesChecked, result.BadBlocks, result.DivergingBlocks, result.RepairedBlocks, result.UnrecoverableBlocks, result.BytesSkipped);
        return result;
    }

    private async Task ScrubChunkAsync(long extent, ExtentState state, long offset, int chunk, NativeBuffer data, NativeBuffer sums, ScrubTally tally, ScrubPacer pacer, CancellationToken cancellationToken)
    {
        var view = state.View!;
        int blocks = chunk / ReplicaGeometry.BlockSize;
        int n = view.Replicas.Length;
        var stored = new uint[n][];
        var suspects = new bool[blocks];
        bool any = false;
        for (int r = 0; r < n; r++)
        {
            var target = view.Replicas[r];
            if (target.State != ReplicaState.InSync)
            {
                continue;
            }

            var status = await ReplicaIoAsync(target, ReplicaOperation.ReadChecksums, extent, offset, chunk, sums, 0).ConfigureAwait(false);
            if (status != ReplicaStatus.Ok)
            {
                tally.BytesSkipped += chunk;
                continue;
            }

            stored[r] = MemoryMarshal.Cast<byte, uint>(sums.Span).ToArray();
            status = await ReplicaIoAsync(target, ReplicaOperation.Read, extent, offset, chunk, data, 0).ConfigureAwait(false);
            if (status is ReplicaStatus.ChecksumMismatch or ReplicaStatus.IoError)
            {
                // Which blocks the store refused it does not say: narrow them down (still without holding writes).
                any |= await NarrowAsync(target, extent, offset, chunk, data, suspects).ConfigureAwait(false);
            }
            else if (status != ReplicaStatus.Ok)
            {
                tally.BytesSkipped += chunk;
                stored[r] = null!;
                continue;
            }

            tally.AddChecked(chunk);
            await pacer.PaceAsync(chunk, cancellationToken).ConfigureAwait(false);
        }

        uint[]? first = null;
        foreach (var s in stored)
        {
            if (s == null)
            {
                continue;
            }

            if (first == null)
            {
                first = s;
                continue;
            }

            for (int b = 0; b < blocks; b++)
            {
                if (s[b] != first[b])
                {
                    suspects[b] = true;
                    any = true;
                }
            }
        }

        if (!any)
        {
            return;
        }

        var list = new List<int>();
        for (int b = 0; b < blocks; b++)
        {
            if (suspects[b])
            {
                list.Add(b);
            }
        }

        foreach (var batch in list.Chunk(SuspectsPerHold))
        {
            bool done = await WithWritesHeldAsync(state, () => ResolveAsync(extent, state, offset, chunk, batch, tally, cancellationToken), cancellationToken).ConfigureAwait(false);
            if (!done)
            {
                Log.ControlFailed(Name, $"scrub of extent {extent}: writes to it did not drain within 30 s; {batch.Length} suspect blocks at byte {offset} were not re-checked");
                tally.BytesSkipped += (long)batch.Length * ReplicaGeometry.BlockSize;
            }
        }
    }

    // Finds the blocks of a chunk a replica refuses: reads it again a region-sized piece (at most 64 KiB) at a time,
    // then the refused pieces block by block, and marks those blocks suspects. True when it found any.
    private async Task<bool> NarrowAsync(ReplicaTarget target, long extent, long offset, int chunk, NativeBuffer data, bool[] suspects)
    {
        int piece = (int)Math.Min(RegionSize, 64 * 1024);
        bool found = false;
        for (int at = 0; at < chunk; at += piece)
        {
            var status = await ReplicaIoAsync(target, ReplicaOperation.Read, extent, offset + at, piece, data, 0).ConfigureAwait(false);
            if (status is not (ReplicaStatus.ChecksumMismatch or ReplicaStatus.IoError))
            {
                continue;
            }

            for (int b = at; b < at + piece; b += ReplicaGeometry.BlockSize)
            {
                status = await ReplicaIoAsync(target, ReplicaOperation.Read, extent, offset + b, ReplicaGeometry.BlockSize, data, 0).ConfigureAwait(false);
                if (status is ReplicaStatus.ChecksumMismatch or ReplicaStatus.IoError)
                {
                    suspects[b / ReplicaGeometry.BlockSize] = true;
                    found = true;
                }
            }
        }

        return found;
    }

    // With the extent's writes held: reads each suspect block on every in-sync replica, decides what its good
    // majority holds, and rewrites the copies that do not hold it.
    private async Task<bool> ResolveAsync(long extent, ExtentState state, long offset, int chunk, int[] blocks, ScrubTally tally, CancellationToken cancellationToken)
    {
        var view = state.View!;
        int n = view.Replicas.Length;
        using var sums = new NativeBuffer(chunk / ReplicaGeometry.BlockSize * sizeof(uint));
        var stored = new uint[n][];
        for (int r = 0; r < n; r++)
        {
            if (view.Replicas[r].State == ReplicaState.InSync
                && await ReplicaIoAsync(view.Replicas[r], ReplicaOperation.ReadChecksums, extent, offset, chunk, sums, 0).ConfigureAwait(false) == ReplicaStatus.Ok)
            {
                stored[r] = MemoryMarshal.Cast<byte, uint>(sums.Span).ToArray();
            }
        }

        var copies = new NativeBuffer[n];
        try
        {
            var good = new bool[n];
            var bad = new bool[n];
            foreach (int b in blocks)
            {
                cancellationToken.ThrowIfCancellationRequested();
                long at = offset + ((long)b * ReplicaGeometry.BlockSize);
                int goodCount = 0;
                for (int r = 0; r < n; r++)
                {
                    good[r] = bad[r] = false;
                    if (stored[r] == null)
                    {
                        continue;
                    }

                    copies[r] ??= new NativeBuffer(ReplicaGeometry.BlockSize);
                    var status = await ReplicaIoAsync(view.Replicas[r], ReplicaOperation.Read, extent, at, ReplicaGeometry.BlockSize, copies[r], 0).ConfigureAwait(false);
                    if (status == ReplicaStatus.Ok)
                    {
                        good[r] = true;
                        goodCount++;
                    }
                    else if (status is ReplicaStatus.ChecksumMismatch or ReplicaStatus.IoError)
                    {
                        bad[r] = true;
                    }
                }

                // The value held by more than half of the good copies (one good copy is its own majority).
                int winner = -1;
                for (int r = 0; r < n && winner < 0; r++)
                {
                    if (!good[r])
                    {
                        continue;
                    }

                    int votes = 0;
                    for (int o = 0; o < n; o++)
                    {
                        if (good[o] && stored[o][b] == stored[r][b])
                        {
                            votes++;
                        }
                    }

                    if (votes * 2 > goodCount)
                    {
                        winner = r;
                    }
                }

                bool differs = false;
                for (int r = 0; r < n; r++)
                {
                    differs |= bad[r] || (good[r] && winner >= 0 && stored[r][b] != stored[winner][b]);
                }

                if (winner < 0 && (goodCount > 0 || Array.IndexOf(bad, true) >= 0))
                {
                    // Every copy bad, or good copies that disagree with no majority: report, rewrite nothing.
                    tally.UnrecoverableBlocks++;
                    ScrubMeters.Unrecoverable.Add(1, _tag);
                    var copiesText = string.Join(", ", Enumerable.Range(0, n).Where(r => good[r] || bad[r]).Select(r => $"{view.Replicas[r].NodeId}/{view.Replicas[r].Device} {(bad[r] ? "bad" : $"crc {stored[r][b]:x8}")}"));
                    ReplicationLog.ScrubUnrecoverable(Log.Logger, Name, extent, at, copiesText);
                    for (int r = 0; r < n; r++)
                    {
                        if (bad[r])
                        {
                            tally.BadBlocks++;
                            ScrubMeters.Bad.Add(1, _tag);
                        }
                        else if (good[r])
                        {
                            tally.DivergingBlocks++;
                            ScrubMeters.Diverging.Add(1, _tag);
                        }

                        if (good[r] || bad[r])
                        {
                            tally.Find(new ScrubFinding(extent, at, view.Replicas[r].NodeId, view.Replicas[r].Device, ScrubFindingKind.Unrecoverable, false));
                        }
                    }

                    continue;
                }

                if (!differs)
                {
                    continue; // a write raced the first look: the replicas agree now
                }

                var source = view.Replicas[winner];
                for (int r = 0; r < n; r++)
                {
                    bool isBad = bad[r];
                    bool diverging = good[r] && stored[r][b] != stored[winner][b];
                    if (!isBad && !diverging)
                    {
                        continue;
                    }

                    var kind = isBad ? ScrubFindingKind.Bad : ScrubFindingKind.Diverging;
                    if (isBad)
                    {
                        tally.BadBlocks++;
                        ScrubMeters.Bad.Add(1, _tag);
                    }
                    else
                    {
                        tally.DivergingBlocks++;
                        ScrubMeters.Diverging.Add(1, _tag);
                    }

                    var target = view.Replicas[r];
                    var status = await ReplicaIoAsync(target, ReplicaOperation.Write, extent, at, ReplicaGeometry.BlockSize, copies[winner], 0).ConfigureAwait(false);
                    if (status == ReplicaStatus.Ok)
                    {
                        tally.RepairedBlocks++;
                        ScrubMeters.Repaired.Add(1, _tag);
                        ReplicationLog.ScrubRepaired(Log.Logger, Name, extent, at, target.NodeId, target.Device, isBad ? "failing its checksum" : "diverging from the majority", source.NodeId, source.Device);
                        tally.Find(new ScrubFinding(extent, at, target.NodeId, target.Device, kind, true));
                    }
                    else
                    {
                        tally.RepairFailures++;
                        ReplicationLog.ScrubRepairFailed(Log.Logger, Name, extent, at, target.NodeId, target.Device, status.ToString());
                        tally.Find(new ScrubFinding(extent, at, target.NodeId, target.Device, kind, false));
                        Interlocked.Or(ref state.Missed[r], ReplicaGeometry.RegionMask(at, ReplicaGeometry.BlockSize, RegionSize));
                        await MarkOutOfSyncAsync(extent, state, r).ConfigureAwait(false);
                    }
                }
            }

            return true;
        }
        finally
        {
            foreach (var copy in copies)
            {
                copy?.Dispose();
            }
        }
    }

    // One replica request of the scrub: a read, a checksum read or a durable rewrite of length bytes of the buffer.
    private async Task<ReplicaStatus> ReplicaIoAsync(ReplicaTarget target, ReplicaOperation operation, long extent, long offset, int length, NativeBuffer buffer, int bufferOffset)
    {
        var request = NewRequest(operation, target.Device, extent, offset, 0);
        request.Class = IoClass.Background;
        if (operation == ReplicaOperation.ReadChecksums)
        {
            request.Length = length;
            buffer.SetChecksums(request);
        }
        else
        {
            buffer.AddTo(request, bufferOffset, length);
            if (operation == ReplicaOperation.Write)
            {
                request.Flags = BlockRequestFlags.ForceUnitAccess;
            }
        }

        var answer = await _lane.ExecuteAsync(target.NodeId, request).ConfigureAwait(false);
        var status = answer.Status;
        ulong observed = answer.ObservedEpoch;
        answer.Dispose();
        if (status == ReplicaStatus.StaleEpoch)
        {
            OnFenced(observed);
        }

        return status;
    }

    private void ThrowIfFenced()
    {
        if (IsFenced)
        {
            throw new ReplicationException($"Volume '{Name}': a newer owner fenced this one; scrub it on its owner.");
        }
    }

    // The background scrub: every ScrubInterval while attached, until the volume is detached.
    private async Task ScrubLoopAsync(CancellationToken cancellationToken)
    {
        var interval = _options.ScrubInterval;
        if (interval == TimeSpan.Zero || interval == Timeout.InfiniteTimeSpan)
        {
            return;
        }

        try
        {
            while (!cancellationToken.IsCancellationRequested)
            {
                await Task.Delay(interval, _options.TimeProvider, cancellationToken).ConfigureAwait(false);
                if (IsFenced)
                {
                    return;
                }

                try
                {
                    await ScrubAsync(null, cancellationToken).ConfigureAwait(false);
                }
                catch (Exception e) when (e is not OperationCanceledException and not ObjectDisposedException)
                {
                    Log.ControlFailed(Name, $"background scrub: {e.Message}");
                }
            }
        }
        catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
        {
        }
    }

    /// <summary>Paces scrub reads to a byte rate: waits, when ahead, until the bytes read so far are due.</summary>
    private sealed class ScrubPacer(TimeProvider time, long bytesPerSecond)
    {
        private readonly long _start = time.GetTimestamp();
        private long _bytes;

        public async ValueTask PaceAsync(long bytes, CancellationToken cancellationToken)
        {
            _bytes += bytes;
            var due = TimeSpan.FromSeconds((double)_bytes / bytesPerSecond);
            var ahead = due - time.GetElapsedTime(_start);
            if (ahead > TimeSpan.FromMilliseconds(1))
            {
                await Task.Delay(ahead, time, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    /// <summary>What a running scrub has found so far.</summary>
    private sealed class ScrubTally(ReplicatedVolume volume, long extentsTotal, IProgress<ScrubProgress>? progress)
    {
        private readonly List<ScrubFinding> _findings = [];

        public long ExtentsChecked;
        public long BytesChecked;
        public long BytesSkipped;
        public long BadBlocks;
        public long DivergingBlocks;
        public long RepairedBlocks;
        public long RepairFailures;
        public long UnrecoverableBlocks;

        public void AddChecked(long bytes)
        {
            BytesChecked += bytes;
            ScrubMeters.Bytes.Add(bytes, volume._tag);
        }

        public void Find(ScrubFinding finding)
        {
            if (_findings.Count < ScrubResult.MaxFindings)
            {
                _findings.Add(finding);
            }
        }

        public void Report() => progress?.Report(new ScrubProgress(ExtentsChecked, extentsTotal, BytesChecked, BadBlocks, DivergingBlocks, RepairedBlocks, UnrecoverableBlocks));

        public ScrubResult ToResult(TimeSpan duration) => new()
        {
            Volume = volume.Name,
            ExtentsChecked = ExtentsChecked,
            BytesChecked = BytesChecked,
            BytesSkipped = BytesSkipped,
            BadBlocks = BadBlocks,
            DivergingBlocks = DivergingBlocks,
            RepairedBlocks = RepairedBlocks,
            RepairFailures = RepairFailures,
            UnrecoverableBlocks = UnrecoverableBlocks,
            Findings = [.. _findings],
            Duration = duration,
        };
    }

    /// <summary>The scrub's instruments (a type of their own: static fields of a partial type's parts initialize in
    /// no set order, and these must not depend on the main part's meter).</summary>
    private static class ScrubMeters
    {
        private static readonly Meter s_meter = new("Hci.Core.Replication");

        public static readonly Counter<long> Bytes = s_meter.CreateCounter<long>("hci.replication.scrub_bytes", "By", "Bytes scrub read from replicas and checked against their checksums.");
        public static readonly Counter<long> Bad = s_meter.CreateCounter<long>("hci.replication.scrub_bad_blocks", "{block}", "Block copies scrub found failing their checksum.");
        public static readonly Counter<long> Diverging = s_meter.CreateCounter<long>("hci.replication.scrub_diverging_blocks", "{block}", "Block copies scrub found self-consistent but different from the majority of their replicas.");
        public static readonly Counter<long> Repaired = s_meter.CreateCounter<long>("hci.replication.scrub_repaired_blocks", "{block}", "Block copies scrub rewrote from a replica holding the good majority's data.");
        public static readonly Counter<long> Unrecoverable = s_meter.CreateCounter<long>("hci.replication.scrub_unrecoverable_blocks", "{block}", "Blocks scrub found with no good majority among their replicas (left as they are).");
    }
}
