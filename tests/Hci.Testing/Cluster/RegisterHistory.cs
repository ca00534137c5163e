using System.Diagnostics;

namespace Hci.Testing;

/// <summary>
/// The history of a register workload, Jepsen style: each block is an independent register, and every operation on it
/// is recorded with its invocation and completion times on one monotonic clock and its outcome; reads also record the
/// value they saw. Flushes and power losses (<see cref="Crash()"/>) are recorded for the whole device. A
/// <see cref="RegisterLoad"/> fills it while it runs; tests build histories by hand with the <c>Add</c> methods;
/// <see cref="RegisterChecker"/> checks either.
/// </summary>
/// <remarks>
/// <para>Times are <see cref="Stopwatch.GetTimestamp"/> ticks (any monotonic numbers for a hand-built history). An
/// operation that has not completed, or never will, has <see cref="RegisterOperation.Completed"/> =
/// <see cref="long.MaxValue"/>.</para>
/// <para>Thread-safe: many workers record at once, and <see cref="Snapshot"/> copies a consistent view for the checker
/// while they go on.</para>
/// </remarks>
public sealed class RegisterHistory
{
    private readonly Dictionary<long, List<RegisterOperation>> _blocks = [];
    private readonly List<RegisterFlush> _flushes = [];
    private readonly List<long> _crashes = [];
    private readonly Lock _lock = new();
    private long _acknowledgedWrites;

    /// <summary>The current time on the history's clock.</summary>
    public static long Now => Stopwatch.GetTimestamp();

    /// <summary>Writes acknowledged so far (cheap to poll, unlike <see cref="Count"/>).</summary>
    public long AcknowledgedWrites => Interlocked.Read(ref _acknowledgedWrites);

    /// <summary>The blocks that have at least one operation, in order.</summary>
    public IReadOnlyList<long> Blocks
    {
        get
        {
            lock (_lock)
            {
                return [.. _blocks.Keys.Order()];
            }
        }
    }

    /// <summary>Every flush, in invocation order.</summary>
    public IReadOnlyList<RegisterFlush> Flushes
    {
        get
        {
            lock (_lock)
            {
                return [.. _flushes.Select(f => f.Copy())];
            }
        }
    }

    /// <summary>The times of every power loss, in order.</summary>
    public IReadOnlyList<long> Crashes
    {
        get
        {
            lock (_lock)
            {
                return [.. _crashes];
            }
        }
    }

    /// <summary>The operations on <paramref name="block"/> (copies), in the order they were recorded.</summary>
    /// <param name="block">The block.</param>
    /// <returns>Its operations.</returns>
    public IReadOnlyList<RegisterOperation> Operations(long block)
    {
        lock (_lock)
        {
            return _blocks.TryGetValue(block, out var ops) ? [.. ops.Select(o => o.Copy())] : [];
        }
    }

    /// <summary>A copy of the whole history as it is now; operations still in flight stay incomplete in it.</summary>
    /// <returns>The copy.</returns>
    public RegisterHistory Snapshot()
    {
        var copy = new RegisterHistory();
        lock (_lock)
        {
            foreach (var (block, ops) in _blocks)
            {
                copy._blocks[block] = [.. ops.Select(o => o.Copy())];
            }

            copy._flushes.AddRange(_flushes.Select(f => f.Copy()));
            copy._crashes.AddRange(_crashes);
        }

        return copy;
    }

    /// <summary>Counts the operations by kind and outcome.</summary>
    /// <returns>The counts.</returns>
    public RegisterCounts Count()
    {
        lock (_lock)
        {
            long Of(RegisterOperationKind kind, RegisterOutcome outcome) => _blocks.Values.Sum(ops => ops.Count(o => o.Kind == kind && o.Outcome == outcome));
            return new RegisterCounts(
                Of(RegisterOperationKind.Write, RegisterOutcome.Ok), Of(RegisterOperationKind.Write, RegisterOutcome.Failed),
                Of(RegisterOperationKind.Write, RegisterOutcome.Unknown), Of(RegisterOperationKind.Write, RegisterOutcome.Pending),
                Of(RegisterOperationKind.Read, RegisterOutcome.Ok), Of(RegisterOperationKind.Read, RegisterOutcome.Failed),
                Of(RegisterOperationKind.Read, RegisterOutcome.Unknown), _flushes.Count(f => f.Outcome == RegisterOutcome.Ok), _crashes.Count);
        }
    }

    /// <summary>Records the invocation of a write, now.</summary>
    /// <param name="block">The block.</param>
    /// <param name="writer">The writer's id, as in the value.</param>
    /// <param name="sequence">The sequence number, as in the value.</param>
    /// <returns>The operation, to complete.</returns>
    public RegisterOperation BeginWrite(long block, int writer, long sequence) => Add(new RegisterOperation(RegisterOperationKind.Write, block, writer, sequence, Now));

    /// <summary>Records the invocation of a read, now.</summary>
    /// <param name="block">The block.</param>
    /// <returns>The operation, to complete.</returns>
    public RegisterOperation BeginRead(long block) => Add(new RegisterOperation(RegisterOperationKind.Read, block, 0, 0, Now));

    /// <summary>Records the completion of a write or a failed read, now.</summary>
    /// <param name="operation">From <see cref="BeginWrite"/> or <see cref="BeginRead"/>.</param>
    /// <param name="outcome">Ok (a write only: a read that succeeded goes to <see cref="CompleteRead"/>), failed, or
    /// unknown (given up after a timeout: the completion time stays open, for the request may still take effect).</param>
    public void Complete(RegisterOperation operation, RegisterOutcome outcome)
    {
        ArgumentNullException.ThrowIfNull(operation);
        if (outcome == RegisterOutcome.Ok && operation.Kind == RegisterOperationKind.Read)
        {
            throw new ArgumentException("A read that succeeded is completed with CompleteRead, with what it saw.", nameof(outcome));
        }

        long now = Now;
        lock (_lock)
        {
            operation.Finish(outcome, outcome == RegisterOutcome.Unknown ? long.MaxValue : now, default);
        }

        if (outcome == RegisterOutcome.Ok)
        {
            Interlocked.Increment(ref _acknowledgedWrites);
        }
    }

    /// <summary>Records the completion of a read that succeeded, now.</summary>
    /// <param name="operation">From <see cref="BeginRead"/>.</param>
    /// <param name="observed">What it read.</param>
    public void CompleteRead(RegisterOperation operation, RegisterObservation observed)
    {
        ArgumentNullException.ThrowIfNull(operation);
        long now = Now;
        lock (_lock)
        {
            operation.Finish(RegisterOutcome.Ok, now, observed);
        }
    }

    /// <summary>Records the invocation of a flush, now.</summary>
    /// <returns>The flush, to complete.</returns>
    public RegisterFlush BeginFlush()
    {
        var flush = new RegisterFlush(Now);
        lock (_lock)
        {
            _flushes.Add(flush);
        }

        return flush;
    }

    /// <summary>Records the completion of a flush, now.</summary>
    /// <param name="flush">From <see cref="BeginFlush"/>.</param>
    /// <param name="outcome">Its outcome.</param>
    public void Complete(RegisterFlush flush, RegisterOutcome outcome)
    {
        ArgumentNullException.ThrowIfNull(flush);
        long now = Now;
        lock (_lock)
        {
            flush.Finish(outcome, outcome is RegisterOutcome.Ok or RegisterOutcome.Failed ? now : long.MaxValue);
        }
    }

    /// <summary>Records a power loss of the whole device, now: what was not flushed may be gone, and operations in
    /// flight end with it.</summary>
    public void Crash() => AddCrash(Now);

    /// <summary>Adds a write with given times (a hand-built history).</summary>
    /// <param name="block">The block.</param>
    /// <param name="writer">The writer's id.</param>
    /// <param name="sequence">The sequence number.</param>
    /// <param name="invoked">When it was invoked.</param>
    /// <param name="completed">When it completed; <see cref="long.MaxValue"/> for never (unknown or pending).</param>
    /// <param name="outcome">Its outcome.</param>
    /// <returns>The operation.</returns>
    public RegisterOperation AddWrite(long block, int writer, long sequence, long invoked, long completed, RegisterOutcome outcome)
    {
        var op = Add(new RegisterOperation(RegisterOperationKind.Write, block, writer, sequence, invoked));
        op.Finish(outcome, completed, default);
        return op;
    }

    /// <summary>Adds a read that succeeded, with given times (a hand-built history).</summary>
    /// <param name="block">The block.</param>
    /// <param name="invoked">When it was invoked.</param>
    /// <param name="completed">When it completed.</param>
    /// <param name="observed">What it saw.</param>
    /// <returns>The operation.</returns>
    public RegisterOperation AddRead(long block, long invoked, long completed, RegisterObservation observed)
    {
        var op = Add(new RegisterOperation(RegisterOperationKind.Read, block, 0, 0, invoked));
        op.Finish(RegisterOutcome.Ok, completed, observed);
        return op;
    }

    /// <summary>Adds a flush with given times (a hand-built history).</summary>
    /// <param name="invoked">When it was invoked.</param>
    /// <param name="completed">When it completed.</param>
    /// <param name="outcome">Its outcome.</param>
    public void AddFlush(long invoked, long completed, RegisterOutcome outcome)
    {
        var flush = new RegisterFlush(invoked);
        flush.Finish(outcome, completed);
        lock (_lock)
        {
            _flushes.Add(flush);
        }
    }

    /// <summary>Adds a power loss at a given time (a hand-built history).</summary>
    /// <param name="at">When power was lost.</param>
    public void AddCrash(long at)
    {
        lock (_lock)
        {
            _crashes.Add(at);
            _crashes.Sort();
        }
    }

    private RegisterOperation Add(RegisterOperation op)
    {
        lock (_lock)
        {
            if (!_blocks.TryGetValue(op.Block, out var ops))
            {
                ops = [];
                _blocks[op.Block] = ops;
            }

            ops.Add(op);
        }

        return op;
    }
}

/// <summary>What kind of operation on a register.</summary>
public enum RegisterOperationKind
{
    /// <summary>A write of one value.</summary>
    Write,

    /// <summary>A read.</summary>
    Read,
}

/// <summary>How an operation ended.</summary>
public enum RegisterOutcome
{
    /// <summary>Not completed yet (in flight when the history was copied).</summary>
    Pending,

    /// <summary>Acknowledged.</summary>
    Ok,

    /// <summary>Returned an error: a write may or may not have taken effect, but only before it returned.</summary>
    Failed,

    /// <summary>Given up after a timeout: a write may take effect at any time after its invocation.</summary>
    Unknown,
}

/// <summary>One operation on one block.</summary>
public sealed class RegisterOperation
{
    internal RegisterOperation(RegisterOperationKind kind, long block, int writer, long sequence, long invoked)
    {
        Kind = kind;
        Block = block;
        Writer = writer;
        Sequence = sequence;
        Invoked = invoked;
    }

    /// <summary>A write or a read.</summary>
    public RegisterOperationKind Kind { get; }

    /// <summary>The block.</summary>
    public long Block { get; }

    /// <summary>A write's writer id (0 for a read).</summary>
    public int Writer { get; }

    /// <summary>A write's sequence number (0 for a read: see <see cref="Observed"/>).</summary>
    public long Sequence { get; }

    /// <summary>When it was invoked.</summary>
    public long Invoked { get; }

    /// <summary>When it completed; <see cref="long.MaxValue"/> while it has not (or never will, when unknown).</summary>
    public long Completed { get; private set; } = long.MaxValue;

    /// <summary>How it ended.</summary>
    public RegisterOutcome Outcome { get; private set; }

    /// <summary>What a read that succeeded saw.</summary>
    public RegisterObservation Observed { get; private set; }

    /// <inheritdoc/>
    public override string ToString() => Kind == RegisterOperationKind.Write
        ? $"write of seq {Sequence} (writer {Writer}) to block {Block} [{Invoked}, {Time(Completed)}] {Outcome}"
        : $"read of block {Block} [{Invoked}, {Time(Completed)}] {Outcome}{(Outcome == RegisterOutcome.Ok ? $": {Observed}" : "")}";

    internal void Finish(RegisterOutcome outcome, long completed, RegisterObservation observed)
    {
        Outcome = outcome;
        Completed = completed;
        Observed = observed;
    }

    internal RegisterOperation Copy()
    {
        var copy = new RegisterOperation(Kind, Block, Writer, Sequence, Invoked);
        copy.Finish(Outcome, Completed, Observed);
        return copy;
    }

    private static string Time(long t) => t == long.MaxValue ? "open" : t.ToString(System.Globalization.CultureInfo.InvariantCulture);
}

/// <summary>A flush of the whole device: it makes durable every write that completed before it was invoked.</summary>
public sealed class RegisterFlush
{
    internal RegisterFlush(long invoked) => Invoked = invoked;

    /// <summary>When it was invoked.</summary>
    public long Invoked { get; }

    /// <summary>When it completed; <see cref="long.MaxValue"/> while it has not.</summary>
    public long Completed { get; private set; } = long.MaxValue;

    /// <summary>How it ended.</summary>
    public RegisterOutcome Outcome { get; private set; }

    internal void Finish(RegisterOutcome outcome, long completed)
    {
        Outcome = outcome;
        Completed = completed;
    }

    internal RegisterFlush Copy()
    {
        var copy = new RegisterFlush(Invoked);
        copy.Finish(Outcome, Completed);
        return copy;
    }
}

/// <summary>How many operations a history holds, by kind and outcome.</summary>
/// <param name="Writes">Writes acknowledged.</param>
/// <param name="FailedWrites">Writes that returned an error.</param>
/// <param name="UnknownWrites">Writes given up after a timeout.</param>
/// <param name="PendingWrites">Writes still in flight.</param>
/// <param name="Reads">Reads that returned data.</param>
/// <param name="FailedReads">Reads that returned an error.</param>
/// <param name="UnknownReads">Reads given up after a timeout.</param>
/// <param name="Flushes">Flushes acknowledged.</param>
/// <param name="Crashes">Power losses.</param>
public readonly record struct RegisterCounts(long Writes, long FailedWrites, long UnknownWrites, long PendingWrites, long Reads, long FailedReads, long UnknownReads, long Flushes, long Crashes)
{
    /// <inheritdoc/>
    public override string ToString() =>
        $"{Writes} writes ok, {FailedWrites} failed, {UnknownWrites} unknown, {PendingWrites} pending; {Reads} reads ok, {FailedReads} failed, {UnknownReads} unknown; {Flushes} flushes, {Crashes} power losses";
}
