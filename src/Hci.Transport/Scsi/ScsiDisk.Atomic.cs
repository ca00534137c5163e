namespace Hci.Transport.Scsi;

/// <summary>
/// Writes against commands that must exclude them: COMPARE AND WRITE and ORWRITE (atomic against every write
/// that overlaps them, from any nexus) and PREEMPT AND ABORT (which answers only once the writes admitted before
/// it have finished). The fast path pays two uncontended atomic adds per write on a counter of its own stripe and
/// looks at one volatile field; the range check and any wait happen only while such a command runs.
/// </summary>
/// <remarks>
/// A write enters (counts itself in the current epoch's counter of its stripe) before it is admitted and leaves
/// when the device has finished it. A command that must exclude writes first marks itself running (writes that
/// enter from then on see it and wait when they overlap it), then flips the epoch twice, each time waiting for
/// the counters of the epoch it left to drain: every write that could have missed the mark has then finished.
/// Those commands are serialized by one lock, so one flips at a time.
/// </remarks>
public sealed partial class ScsiDisk
{
    private const int WriteStripes = 16;
    private const int StripeStride = 16; // longs: 128 bytes apart, so that stripes do not share a cache line

    private readonly long[] _writers = new long[WriteStripes * StripeStride];
    private readonly object _atomicLock = new();
    private int _writerEpoch;
    private volatile int _excluding;
    private long _atomicOffset;
    private long _atomicLength;
    private TaskCompletionSource? _drained;
    private long _atomicWaits;

    /// <summary>How many times a command that excludes writes found some in flight and waited for them (diagnostics, tests).</summary>
    internal long AtomicWaits => Interlocked.Read(ref _atomicWaits);

    /// <summary>Counts a write in; the token goes back to <see cref="ExitWrite"/>.</summary>
    private int EnterWrite(int nexus)
    {
        int token = ((nexus & (WriteStripes - 1)) * StripeStride) + (Volatile.Read(ref _writerEpoch) & 1);
        Interlocked.Increment(ref _writers[token]);
        return token;
    }

    /// <summary>A write counted in by <see cref="EnterWrite"/> has finished (or will not run).</summary>
    private void ExitWrite(int token)
    {
        Interlocked.Decrement(ref _writers[token]);
        if (_excluding != 0)
        {
            Volatile.Read(ref _drained)?.TrySetResult();
        }
    }

    /// <summary>True when the range overlaps a COMPARE AND WRITE or ORWRITE in progress.</summary>
    private bool OverlapsAtomic(long offset, long length)
    {
        if (_excluding == 0)
        {
            return false;
        }

        lock (_atomicLock)
        {
            return _atomicLength > 0 && offset < _atomicOffset + _atomicLength && _atomicOffset < offset + Math.Max(length, 1);
        }
    }

    /// <summary>
    /// Starts excluding writes (the caller holds <see cref="_compareAndWrite"/>): writes that overlap the range wait
    /// from now on, and those already admitted (whatever their range) are waited for.
    /// </summary>
    private async ValueTask ExcludeWritesAsync(long offset, long length)
    {
        lock (_atomicLock)
        {
            _atomicOffset = offset;
            _atomicLength = length;
        }

        Interlocked.Exchange(ref _excluding, 1);
        for (int flip = 0; flip < 2; flip++)
        {
            int old = (Interlocked.Increment(ref _writerEpoch) - 1) & 1;
            while (true)
            {
                var drained = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                Interlocked.Exchange(ref _drained, drained);
                if (WritersIn(old) == 0)
                {
                    break;
                }

                Interlocked.Increment(ref _atomicWaits);

                try
                {
                    await drained.Task.WaitAsync(TimeSpan.FromMilliseconds(20)).ConfigureAwait(false);
                }
                catch (TimeoutException)
                {
                }
            }
        }
    }

    /// <summary>Ends what <see cref="ExcludeWritesAsync"/> started; writes waiting for it go on once the lock is released.</summary>
    private void EndExclusion()
    {
        lock (_atomicLock)
        {
            _atomicOffset = 0;
            _atomicLength = 0;
        }

        Interlocked.Exchange(ref _drained, null);
        Interlocked.Exchange(ref _excluding, 0);
    }

    private long WritersIn(int epoch)
    {
        long sum = 0;
        for (int s = 0; s < WriteStripes; s++)
        {
            sum += Volatile.Read(ref _writers[(s * StripeStride) + epoch]);
        }

        return sum;
    }

    /// <summary>
    /// A write (slow path) about to touch a range: when it overlaps a COMPARE AND WRITE in progress it gives up its
    /// count (which that command waits for), waits for the atomic lock and keeps it until the write is done, then
    /// checks once more that its nexus may still write (a PREEMPT AND ABORT may have fenced it off meanwhile).
    /// </summary>
    /// <returns>False when the task has been refused.</returns>
    private async ValueTask<bool> AwaitAtomicAsync(ScsiTask task, long offset, long length)
    {
        if (task.AtomicHeld || !OverlapsAtomic(offset, length))
        {
            return true;
        }

        if (task.WriteToken >= 0)
        {
            ExitWrite(task.WriteToken);
            task.WriteToken = -1;
        }

        await _compareAndWrite.WaitAsync().ConfigureAwait(false);
        task.AtomicHeld = true;
        return StillAdmitted(task);
    }

    /// <summary>Ends a write's part in the exclusion: its count, or the atomic lock it waited for.</summary>
    private void LeaveWrite(ScsiTask task)
    {
        if (task.WriteToken >= 0)
        {
            ExitWrite(task.WriteToken);
            task.WriteToken = -1;
        }

        if (task.AtomicHeld)
        {
            task.AtomicHeld = false;
            _compareAndWrite.Release();
        }
    }

    private static bool WritesMedium(byte opcode) => opcode is ScsiOpcode.Write6 or ScsiOpcode.Write10 or ScsiOpcode.Write12 or ScsiOpcode.Write16
        or ScsiOpcode.WriteAndVerify10 or ScsiOpcode.WriteAndVerify12 or ScsiOpcode.WriteAndVerify16 or ScsiOpcode.WriteSame10 or ScsiOpcode.WriteSame16
        or ScsiOpcode.Unmap;
}
