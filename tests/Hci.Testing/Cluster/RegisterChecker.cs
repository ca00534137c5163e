using System.Globalization;
using System.Text;

namespace Hci.Testing;

/// <summary>
/// Checks a <see cref="RegisterHistory"/> block by block, each block an independent register (Jepsen's independent
/// registers, with the one-writer-per-block discipline that makes every check linear rather than a search).
/// </summary>
/// <remarks>
/// <para><b>The model.</b> Writes to a block are sequential: each is invoked after the previous one returned, with a
/// higher sequence number, and none follows a write that never returned (a writer abandons a block whose write it
/// gave up on). So writes take effect, if at all, in sequence order, and a block's value only moves forward. A write
/// that returned ok took effect before it returned. One that returned an error (failed) may or may not have taken
/// effect, but only before it returned: a request that has returned does nothing afterwards. One given up on after a
/// timeout (unknown), or still in flight, may take effect at any time after its invocation. A power loss (crash) ends
/// every operation in flight at that moment (a write then counts as unknown, returned at the crash) and may undo
/// whatever was not made durable by a flush; a flush that completed makes durable every write that had completed
/// before the flush was invoked.</para>
/// <para><b>Definitions.</b> The <i>era</i> of a time is the number of crashes before it. A read is checked when it
/// returned data and did not span a crash. <c>returned(W)</c> is when write W returned, the crash that ended it, or
/// never (unknown, pending). A read R1 that saw sequence <c>v1</c> is <i>settled</i> when <c>v1</c> is 0 (zeros), or
/// its write returned ok, or its write had returned (failed, or ended by a crash) before R1 was invoked: then the value
/// R1 saw has surely taken effect. A read that saw a write still in flight that then failed or never returned (a
/// dirty read) is not settled: that write may yet turn out never to have happened.</para>
/// <para><b>The rules</b>, for every checked read R that saw <c>v</c> (in this order; a read gets at most one
/// violation):</para>
/// <list type="number">
/// <item><b>Corrupt</b>: R saw neither zeros nor a well-formed value of this block (header or checksum wrong).</item>
/// <item><b>Phantom</b>: <c>v</c> is not 0 and no write of this block with sequence <c>v</c> and the same writer was
/// invoked before R completed (a value never written, or not yet).</item>
/// <item><b>Lost write</b> (a stale read against an acknowledgement): <c>v</c> is older than the newest write that
/// returned ok in R's era before R was invoked.</item>
/// <item><b>Lost flushed write</b> (power-loss variant): <c>v</c> is older than the newest write made durable by the
/// last completed flush of an earlier era (carried across every later crash).</item>
/// <item><b>Stale read</b> (reads went backwards): <c>v</c> is older than what a settled read R1 of the same era saw,
/// when R1 completed before R was invoked. A dirty read pins nothing: after its write failed, an older value may be
/// read again. Across a crash, only durability (rule 4) carries over.</item>
/// <item><b>Resurrected write</b>: a read R1 that completed before R was invoked saw <c>v1</c> while every write up to
/// sequence <c>K1</c> had already returned when R1 was invoked, and <c>v1 &lt; v &lt;= K1</c>: the writes
/// <c>v1+1..K1</c> had returned without taking effect, so they never can (a failed write must not reappear once a
/// read after its failure saw an older value; the same holds across crashes).</item>
/// </list>
/// <para>Together: a failed or unknown write may or may not be seen, but once a read invoked after the write returned
/// has seen it, older values never come back, and once such a read has not seen it, it never appears.</para>
/// <para>The history itself is checked too (<see cref="RegisterViolationKind.IllFormed"/>): a block's writes must be
/// sequential with increasing sequence numbers, and reads must not have completed before they were invoked.</para>
/// </remarks>
public static class RegisterChecker
{
    /// <summary>How many violations of each kind a result describes in full; the rest are counted only.</summary>
    public const int DescribedPerKind = 10;

    /// <summary>Checks every block of <paramref name="history"/> (a snapshot is taken first).</summary>
    /// <param name="history">The history.</param>
    /// <returns>The violations found and what was checked.</returns>
    public static RegisterCheckResult Check(RegisterHistory history)
    {
        ArgumentNullException.ThrowIfNull(history);
        var snapshot = history.Snapshot();
        var crashes = snapshot.Crashes.ToArray();
        var flushes = snapshot.Flushes.Where(f => f.Outcome == RegisterOutcome.Ok).ToArray();
        var result = new RegisterCheckResult(snapshot.Count());
        foreach (long block in snapshot.Blocks)
        {
            CheckBlock(block, snapshot.Operations(block), crashes, flushes, result);
        }

        return result;
    }

    private static void CheckBlock(long block, IReadOnlyList<RegisterOperation> ops, long[] crashes, RegisterFlush[] flushes, RegisterCheckResult result)
    {
        result.Blocks++;
        var writes = ops.Where(o => o.Kind == RegisterOperationKind.Write).OrderBy(o => o.Invoked).ToArray();
        int n = writes.Length;
        var returned = new long[n];
        var acked = new bool[n];
        var index = new Dictionary<long, int>(n);
        for (int i = 0; i < n; i++)
        {
            var w = writes[i];
            // The crash that ended it, if one came while it was in flight (then it counts as unknown).
            long crash = FirstCrashAfter(crashes, w.Invoked);
            bool returnedBeforeCrash = w.Outcome is RegisterOutcome.Ok or RegisterOutcome.Failed && w.Completed < crash;
            returned[i] = returnedBeforeCrash ? w.Completed : crash;
            acked[i] = returnedBeforeCrash && w.Outcome == RegisterOutcome.Ok;
            if (i > 0 && (w.Sequence <= writes[i - 1].Sequence || w.Invoked < returned[i - 1]))
            {
                result.Add(RegisterViolationKind.IllFormed, block, $"{w} overlaps or does not follow {writes[i - 1]}: writes to a block must be sequential with increasing sequence numbers");
                return;
            }

            index[w.Sequence] = i;
        }

        var ackedIndex = Enumerable.Range(0, n).Where(i => acked[i]).ToArray();
        var ackedReturns = ackedIndex.Select(i => returned[i]).ToArray();

        // The durable floor of each era: the newest write of an earlier era made durable by a flush there.
        var durable = new long[crashes.Length + 1];
        for (int e = 1; e <= crashes.Length; e++)
        {
            long start = e >= 2 ? crashes[e - 2] : long.MinValue;
            long end = crashes[e - 1];
            long floor = durable[e - 1];
            var last = flushes.Where(f => f.Invoked > start && f.Completed < end).MaxBy(f => f.Invoked); // covers the most
            if (last is not null)
            {
                for (int i = 0; i < n; i++)
                {
                    if (acked[i] && returned[i] > start && returned[i] < last.Invoked)
                    {
                        floor = Math.Max(floor, writes[i].Sequence);
                    }
                }
            }

            durable[e] = floor;
        }

        var reads = ops.Where(o => o.Kind == RegisterOperationKind.Read && o.Outcome == RegisterOutcome.Ok).ToList();
        var checkedReads = new List<(RegisterOperation Read, int Era, long Value, int Index)>();
        foreach (var r in reads)
        {
            if (r.Completed < r.Invoked)
            {
                result.Add(RegisterViolationKind.IllFormed, block, $"{r} completed before it was invoked");
                continue;
            }

            int era = Era(crashes, r.Invoked);
            if (Era(crashes, r.Completed) != era)
            {
                continue; // spanned a power loss: what it saw is not defined
            }

            result.Reads++;
            var seen = r.Observed;
            if (seen.Kind == RegisterObservationKind.Corrupt)
            {
                result.Add(RegisterViolationKind.Corrupt, block, $"{r}");
                continue;
            }

            long v = seen.Kind == RegisterObservationKind.Zeros ? 0 : seen.Sequence;
            int vi = -1;
            if (v != 0)
            {
                if (!index.TryGetValue(v, out vi) || writes[vi].Writer != seen.Writer || writes[vi].Invoked >= r.Completed)
                {
                    string what = !index.TryGetValue(v, out int wi) ? "no such write"
                        : writes[wi].Writer != seen.Writer ? $"that sequence was written by writer {writes[wi].Writer}"
                        : $"that write was invoked at {writes[wi].Invoked}, after the read completed";
                    result.Add(RegisterViolationKind.Phantom, block, $"{r}: {what}");
                    continue;
                }
            }

            long eraStart = era > 0 ? crashes[era - 1] : long.MinValue;
            int newestAcked = LastBefore(ackedReturns, r.Invoked, strict: true);
            newestAcked = newestAcked >= 0 && ackedReturns[newestAcked] > eraStart ? ackedIndex[newestAcked] : -1;
            if (newestAcked >= 0 && v < writes[newestAcked].Sequence)
            {
                result.Add(RegisterViolationKind.LostWrite, block, $"{r}, invoked after {writes[newestAcked]} had returned ok");
                continue;
            }

            if (v < durable[era])
            {
                result.Add(RegisterViolationKind.LostFlushedWrite, block, $"{r}, after a power loss: seq {durable[era]} had been made durable by a completed flush");
                continue;
            }

            checkedReads.Add((r, era, v, vi));
        }

        // Rules 5 and 6, against every earlier read that passed rules 1 to 4: a sweep over the reads in invocation order
        // that takes in each earlier read once it has completed.
        var byInvocation = checkedReads.OrderBy(c => c.Read.Invoked).ToArray();
        var byCompletion = checkedReads.OrderBy(c => c.Read.Completed).ToArray();
        var floors = new (long Value, RegisterOperation? Read)[crashes.Length + 1];
        var killedBy = new RegisterOperation?[n];
        int next = 0;
        foreach (var (r, era, v, vi) in byInvocation)
        {
            for (; next < byCompletion.Length && byCompletion[next].Read.Completed < r.Invoked; next++)
            {
                var (r1, era1, v1, vi1) = byCompletion[next];
                bool settled = vi1 < 0 || acked[vi1] || returned[vi1] <= r1.Invoked;
                if (settled && v1 > floors[era1].Value)
                {
                    floors[era1] = (v1, r1);
                }

                // K1: the newest write that had returned when R1 was invoked; those after what R1 saw never took effect.
                int k1 = LastBefore(returned, r1.Invoked, strict: false);
                for (int i = vi1 + 1; i <= k1; i++)
                {
                    killedBy[i] ??= r1;
                }
            }

            if (v < floors[era].Value)
            {
                result.Add(RegisterViolationKind.StaleRead, block, $"{r}, invoked after {floors[era].Read} had completed");
            }
            else if (vi >= 0 && killedBy[vi] is { } killer)
            {
                result.Add(RegisterViolationKind.ResurrectedWrite, block, $"{r}, invoked after {killer} had completed: {writes[vi]} had returned before that read was invoked, and it saw an older value");
            }
        }
    }

    // The last index i of the ascending times with times[i] < time (strict) or <= time, else -1.
    private static int LastBefore(long[] times, long time, bool strict)
    {
        int lo = 0, hi = times.Length;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (strict ? times[mid] < time : times[mid] <= time)
            {
                lo = mid + 1;
            }
            else
            {
                hi = mid;
            }
        }

        return lo - 1;
    }

    private static long FirstCrashAfter(long[] crashes, long time)
    {
        foreach (long c in crashes)
        {
            if (c > time)
            {
                return c;
            }
        }

        return long.MaxValue;
    }

    private static int Era(long[] crashes, long time)
    {
        int era = 0;
        while (era < crashes.Length && crashes[era] < time)
        {
            era++;
        }

        return era;
    }
}

/// <summary>What the checker can find.</summary>
public enum RegisterViolationKind
{
    /// <summary>A read saw neither zeros nor a well-formed value of its block.</summary>
    Corrupt,

    /// <summary>A read saw a value never written, or not written yet.</summary>
    Phantom,

    /// <summary>A read invoked after a write returned ok saw an older value.</summary>
    LostWrite,

    /// <summary>After a power loss, a read saw a value older than one a completed flush had made durable.</summary>
    LostFlushedWrite,

    /// <summary>A read saw an older value than a settled read that completed before it.</summary>
    StaleRead,

    /// <summary>A read saw a write that an earlier read, invoked after that write returned, had not seen.</summary>
    ResurrectedWrite,

    /// <summary>The history breaks the workload's own discipline (overlapping writes to a block, time going backwards).</summary>
    IllFormed,
}

/// <summary>One violation.</summary>
/// <param name="Kind">Which rule.</param>
/// <param name="Block">The block.</param>
/// <param name="Message">The operations involved.</param>
public sealed record RegisterViolation(RegisterViolationKind Kind, long Block, string Message);

/// <summary>The outcome of <see cref="RegisterChecker.Check"/>.</summary>
public sealed class RegisterCheckResult
{
    private readonly Dictionary<RegisterViolationKind, long> _counts = [];
    private readonly List<RegisterViolation> _violations = [];

    internal RegisterCheckResult(RegisterCounts counts) => Counts = counts;

    /// <summary>The history's operations by kind and outcome.</summary>
    public RegisterCounts Counts { get; }

    /// <summary>Blocks checked.</summary>
    public long Blocks { get; internal set; }

    /// <summary>Reads checked (those that returned data and did not span a power loss).</summary>
    public long Reads { get; internal set; }

    /// <summary>True when nothing was found.</summary>
    public bool IsValid => _counts.Count == 0;

    /// <summary>The first <see cref="RegisterChecker.DescribedPerKind"/> violations of each kind.</summary>
    public IReadOnlyList<RegisterViolation> Violations => _violations;

    /// <summary>How many violations of <paramref name="kind"/> were found.</summary>
    /// <param name="kind">The rule.</param>
    /// <returns>The count.</returns>
    public long Count(RegisterViolationKind kind) => _counts.GetValueOrDefault(kind);

    /// <summary>Every violation found.</summary>
    public long TotalViolations => _counts.Values.Sum();

    /// <summary>One line: what was checked and the violations by kind.</summary>
    public string Summary
    {
        get
        {
            string found = IsValid ? "no violations" : string.Join(", ", _counts.OrderBy(c => c.Key).Select(c => string.Create(CultureInfo.InvariantCulture, $"{c.Value} {c.Key}")));
            return $"{Blocks} blocks, {Reads} reads checked ({Counts}): {found}";
        }
    }

    /// <inheritdoc/>
    public override string ToString()
    {
        var text = new StringBuilder(Summary);
        foreach (var v in _violations)
        {
            text.Append('\n').Append(v.Kind).Append(" at block ").Append(v.Block.ToString(CultureInfo.InvariantCulture)).Append(": ").Append(v.Message);
        }

        return text.ToString();
    }

    internal void Add(RegisterViolationKind kind, long block, string message)
    {
        long count = _counts.GetValueOrDefault(kind) + 1;
        _counts[kind] = count;
        if (count <= RegisterChecker.DescribedPerKind)
        {
            _violations.Add(new RegisterViolation(kind, block, message));
        }
    }
}
