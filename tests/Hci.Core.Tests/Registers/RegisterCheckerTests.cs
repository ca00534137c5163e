using Hci.Core.Blocks;
using Hci.Core.Buffers;
using Hci.Core.Devices;
using Hci.Core.Devices.Decorators;

namespace Hci.Core.Tests.Registers;

/// <summary>
/// The register checker of the fault scenarios on hand-built histories: each rule is shown to catch its violation, and
/// the legal histories around it (a failed or unknown write seen or not seen, reads concurrent with writes, what a
/// power loss may undo) pass. Then the load and the checker together on a memory device, with faults.
/// </summary>
public sealed class RegisterCheckerTests
{
    private const long Never = long.MaxValue;
    private const int Writer = 1;

    private static RegisterObservation Seq(long sequence) => RegisterObservation.Of(Writer, sequence);

    private static RegisterCheckResult Check(RegisterHistory history)
    {
        var result = RegisterChecker.Check(history);
        Assert.Equal(result.TotalViolations, result.Violations.Count); // these histories are small: every one is described
        return result;
    }

    private static void AssertOnly(RegisterCheckResult result, RegisterViolationKind kind, long count = 1)
    {
        Assert.True(result.Count(kind) == count && result.TotalViolations == count, $"expected {count} {kind}: {result}");
    }

    private static void AssertValid(RegisterCheckResult result) => Assert.True(result.IsValid, result.ToString());

    [Fact]
    public void AValueDecodesToItsWriterAndSequenceAndAnyDamageIsCorrupt()
    {
        var data = new byte[RegisterBlock.Size];
        Assert.Equal(RegisterObservation.Zeros, RegisterBlock.Decode(7, data));
        RegisterBlock.Encode(data, 7, 3, 42);
        Assert.Equal(RegisterObservation.Of(3, 42), RegisterBlock.Decode(7, data));

        // The value of block 7 read at block 8: a misdirected write or read.
        Assert.Equal(RegisterObservationKind.Corrupt, RegisterBlock.Decode(8, data).Kind);
        foreach (int at in new[] { 0, 5, 12, 20, 25, 100, RegisterBlock.Size - 1 })
        {
            var damaged = (byte[])data.Clone();
            damaged[at] ^= 0x10;
            var seen = RegisterBlock.Decode(7, damaged);
            Assert.True(seen.Kind == RegisterObservationKind.Corrupt, $"a flip at byte {at} decoded as {seen}");
        }

        var torn = (byte[])data.Clone();
        torn.AsSpan(2048).Clear();
        Assert.Equal(RegisterObservationKind.Corrupt, RegisterBlock.Decode(7, torn).Kind);
    }

    [Fact]
    public void ReadsOfTheNewestAcknowledgedWriteOrOfAWriteInFlightPass()
    {
        var h = new RegisterHistory();
        h.AddRead(0, 0, 5, RegisterObservation.Zeros);
        h.AddWrite(0, Writer, 1, 10, 20, RegisterOutcome.Ok);
        h.AddRead(0, 12, 15, RegisterObservation.Zeros); // concurrent with write 1: either is legal
        h.AddRead(0, 25, 30, Seq(1));
        h.AddWrite(0, Writer, 2, 40, 60, RegisterOutcome.Ok);
        h.AddRead(0, 45, 50, Seq(2)); // saw write 2 before it was acknowledged
        h.AddRead(0, 55, 70, Seq(2));
        h.AddRead(0, 65, 80, Seq(2));
        AssertValid(Check(h));
    }

    [Fact]
    public void AReadInvokedAfterAWriteWasAcknowledgedThatSeesAnOlderValueIsALostWrite()
    {
        var h = new RegisterHistory();
        h.AddWrite(0, Writer, 1, 10, 20, RegisterOutcome.Ok);
        h.AddWrite(0, Writer, 2, 30, 40, RegisterOutcome.Ok);
        h.AddRead(0, 50, 60, Seq(1));
        AssertOnly(Check(h), RegisterViolationKind.LostWrite);

        var zeros = new RegisterHistory();
        zeros.AddWrite(0, Writer, 1, 10, 20, RegisterOutcome.Ok);
        zeros.AddRead(0, 21, 22, RegisterObservation.Zeros);
        AssertOnly(Check(zeros), RegisterViolationKind.LostWrite);
    }

    [Fact]
    public void AValueNeverWrittenOrNotYetWrittenOrByAnotherWriterIsAPhantom()
    {
        var h = new RegisterHistory();
        h.AddWrite(0, Writer, 1, 10, 20, RegisterOutcome.Ok);
        h.AddRead(0, 25, 30, Seq(7)); // never written
        h.AddRead(0, 25, 30, RegisterObservation.Of(Writer + 1, 1)); // sequence 1 was writer 1's
        h.AddRead(0, 31, 32, Seq(2)); // written only later
        h.AddWrite(0, Writer, 2, 40, 50, RegisterOutcome.Ok);
        AssertOnly(Check(h), RegisterViolationKind.Phantom, 3);
    }

    [Fact]
    public void ABadHeaderOrChecksumIsCorruptNotAPhantom()
    {
        var h = new RegisterHistory();
        h.AddWrite(0, Writer, 1, 10, 20, RegisterOutcome.Ok);
        h.AddRead(0, 25, 30, RegisterObservation.Corrupt("checksum differs"));
        AssertOnly(Check(h), RegisterViolationKind.Corrupt);
    }

    [Fact]
    public void AReadThatGoesBackBehindASettledReadIsStaleEvenWhileTheWriteIsInFlight()
    {
        // Write 2 is acknowledged only at 100; one read saw it, a later one saw 1 again.
        var h = new RegisterHistory();
        h.AddWrite(0, Writer, 1, 0, 5, RegisterOutcome.Ok);
        h.AddWrite(0, Writer, 2, 10, 100, RegisterOutcome.Ok);
        h.AddRead(0, 20, 30, Seq(2));
        h.AddRead(0, 40, 50, Seq(1));
        AssertOnly(Check(h), RegisterViolationKind.StaleRead);

        // Overlapping reads are not ordered: both values are legal.
        var overlapping = new RegisterHistory();
        overlapping.AddWrite(0, Writer, 1, 0, 5, RegisterOutcome.Ok);
        overlapping.AddWrite(0, Writer, 2, 10, 100, RegisterOutcome.Ok);
        overlapping.AddRead(0, 20, 45, Seq(2));
        overlapping.AddRead(0, 40, 50, Seq(1));
        AssertValid(Check(overlapping));
    }

    [Fact]
    public void AFailedWriteMayBeSeenOrNotButOnceSeenAfterItFailedOlderValuesNeverComeBack()
    {
        foreach (long seen in new long[] { 1, 2 })
        {
            var h = new RegisterHistory();
            h.AddWrite(0, Writer, 1, 0, 5, RegisterOutcome.Ok);
            h.AddWrite(0, Writer, 2, 10, 50, RegisterOutcome.Failed);
            h.AddRead(0, 60, 70, Seq(seen));
            h.AddRead(0, 80, 90, Seq(seen));
            h.AddWrite(0, Writer, 3, 100, 110, RegisterOutcome.Ok);
            h.AddRead(0, 120, 130, Seq(3));
            AssertValid(Check(h));
        }

        var back = new RegisterHistory();
        back.AddWrite(0, Writer, 1, 0, 5, RegisterOutcome.Ok);
        back.AddWrite(0, Writer, 2, 10, 50, RegisterOutcome.Failed);
        back.AddRead(0, 60, 70, Seq(2));
        back.AddRead(0, 80, 90, Seq(1));
        AssertOnly(Check(back), RegisterViolationKind.StaleRead);
    }

    [Fact]
    public void AReadThatSawAWriteInFlightWhichThenFailedPinsNothing()
    {
        // The owner died with write 2 in flight on one replica only; a read served from that replica saw it, the new
        // owner kept the others' value.
        var h = new RegisterHistory();
        h.AddWrite(0, Writer, 1, 0, 5, RegisterOutcome.Ok);
        h.AddWrite(0, Writer, 2, 10, 50, RegisterOutcome.Failed);
        h.AddRead(0, 20, 30, Seq(2));
        h.AddRead(0, 60, 70, Seq(1));
        h.AddRead(0, 80, 90, Seq(1));
        AssertValid(Check(h));
    }

    [Fact]
    public void AFailedWriteThatAReadAfterItsFailureDidNotSeeNeverAppearsLater()
    {
        var h = new RegisterHistory();
        h.AddWrite(0, Writer, 1, 0, 5, RegisterOutcome.Ok);
        h.AddWrite(0, Writer, 2, 10, 50, RegisterOutcome.Failed);
        h.AddRead(0, 60, 70, Seq(1));
        h.AddRead(0, 80, 90, Seq(2));
        AssertOnly(Check(h), RegisterViolationKind.ResurrectedWrite);
    }

    [Fact]
    public void AnUnknownWriteMayBeSeenOrNotAtAnyTimeAfterItsInvocation()
    {
        var h = new RegisterHistory();
        h.AddWrite(0, Writer, 1, 0, 5, RegisterOutcome.Ok);
        h.AddWrite(0, Writer, 2, 10, Never, RegisterOutcome.Unknown);
        h.AddRead(0, 20, 30, Seq(1));
        h.AddRead(0, 40, 50, Seq(2));
        h.AddRead(0, 60, 70, Seq(1));
        h.AddRead(0, 1000, 1010, Seq(2));
        AssertValid(Check(h));

        // But never an older value than the last acknowledged one, nor a value before its invocation.
        h.AddRead(0, 1020, 1030, RegisterObservation.Zeros);
        var early = new RegisterHistory();
        early.AddWrite(0, Writer, 1, 100, Never, RegisterOutcome.Unknown);
        early.AddRead(0, 20, 30, Seq(1));
        var result = Check(h);
        AssertOnly(result, RegisterViolationKind.LostWrite);
        AssertOnly(Check(early), RegisterViolationKind.Phantom);
    }

    [Fact]
    public void AWriteStillInFlightInASnapshotCountsAsUnknown()
    {
        var h = new RegisterHistory();
        var write = h.BeginWrite(0, Writer, 1);
        var read = h.BeginRead(0);
        h.CompleteRead(read, Seq(1));
        var snapshot = Check(h);
        AssertValid(snapshot);
        Assert.Equal(1, snapshot.Counts.PendingWrites);
        h.Complete(write, RegisterOutcome.Ok);
        var after = h.BeginRead(0);
        h.CompleteRead(after, RegisterObservation.Zeros);
        AssertOnly(Check(h), RegisterViolationKind.LostWrite);
    }

    [Fact]
    public void APowerLossMayUndoWhatNoFlushCoveredButNeverWhatOneDid()
    {
        RegisterHistory Build(RegisterObservation after)
        {
            var h = new RegisterHistory();
            h.AddWrite(0, Writer, 1, 0, 10, RegisterOutcome.Ok);
            h.AddFlush(20, 30, RegisterOutcome.Ok);
            h.AddWrite(0, Writer, 2, 40, 50, RegisterOutcome.Ok);
            h.AddFlush(45, 55, RegisterOutcome.Ok); // invoked before write 2 completed: does not cover it
            h.AddRead(0, 52, 54, Seq(2));
            h.AddCrash(60);
            h.AddRead(0, 70, 80, after);
            return h;
        }

        AssertValid(Check(Build(Seq(1))));
        AssertValid(Check(Build(Seq(2))));
        AssertOnly(Check(Build(RegisterObservation.Zeros)), RegisterViolationKind.LostFlushedWrite);

        // What a flush covered stays durable across later power losses too.
        var twice = Build(Seq(1));
        twice.AddCrash(90);
        twice.AddRead(0, 100, 110, RegisterObservation.Zeros);
        AssertOnly(Check(twice), RegisterViolationKind.LostFlushedWrite);
    }

    [Fact]
    public void AfterAPowerLossWhatTheFirstReadSawSticks()
    {
        // Write 2 was in flight at the power loss: after it, it may or may not be there, but not both in turn.
        foreach (var (first, second, violation) in new (long, long, RegisterViolationKind?)[]
        {
            (1, 1, null), (2, 2, null), (2, 1, RegisterViolationKind.StaleRead), (1, 2, RegisterViolationKind.ResurrectedWrite),
        })
        {
            var h = new RegisterHistory();
            h.AddWrite(0, Writer, 1, 0, 10, RegisterOutcome.Ok);
            h.AddFlush(20, 30, RegisterOutcome.Ok);
            h.AddWrite(0, Writer, 2, 40, Never, RegisterOutcome.Pending);
            h.AddCrash(60);
            h.AddRead(0, 70, 80, Seq(first));
            h.AddRead(0, 90, 100, Seq(second));
            var result = Check(h);
            if (violation is { } kind)
            {
                AssertOnly(result, kind);
            }
            else
            {
                AssertValid(result);
            }
        }
    }

    [Fact]
    public void AReadSpanningAPowerLossIsNotChecked()
    {
        var h = new RegisterHistory();
        h.AddWrite(0, Writer, 1, 0, 10, RegisterOutcome.Ok);
        h.AddCrash(60);
        h.AddRead(0, 50, 70, RegisterObservation.Corrupt("torn"));
        var result = Check(h);
        AssertValid(result);
        Assert.Equal(0, result.Reads);
    }

    [Fact]
    public void OverlappingWritesToABlockAreAnIllFormedHistory()
    {
        var h = new RegisterHistory();
        h.AddWrite(0, Writer, 1, 0, 50, RegisterOutcome.Ok);
        h.AddWrite(0, Writer, 2, 40, 60, RegisterOutcome.Ok);
        AssertOnly(Check(h), RegisterViolationKind.IllFormed);

        var afterUnknown = new RegisterHistory();
        afterUnknown.AddWrite(0, Writer, 1, 0, Never, RegisterOutcome.Unknown);
        afterUnknown.AddWrite(0, Writer, 2, 40, 60, RegisterOutcome.Ok);
        AssertOnly(Check(afterUnknown), RegisterViolationKind.IllFormed);
    }

    [Fact]
    public void BlocksAreIndependentRegisters()
    {
        var h = new RegisterHistory();
        h.AddWrite(0, Writer, 1, 0, 10, RegisterOutcome.Ok);
        h.AddWrite(1, Writer, 1, 0, 10, RegisterOutcome.Ok);
        h.AddWrite(1, Writer, 2, 20, 30, RegisterOutcome.Ok);
        h.AddRead(0, 40, 50, Seq(1));
        h.AddRead(1, 40, 50, Seq(1));
        var result = Check(h);
        AssertOnly(result, RegisterViolationKind.LostWrite);
        Assert.Equal(1, result.Violations.Single().Block);
        Assert.Equal(2, result.Blocks);
    }

    [Fact]
    public async Task TheLoadOnAMemoryDeviceRecordsAHistoryThatPasses()
    {
        await using var device = new MemoryBlockDevice(1 << 20);
        var load = new RegisterLoad(new RegisterHistory(), firstBlock: 16, blocks: 64, writers: 4);
        using var stop = new CancellationTokenSource();
        var run = load.RunAsync(device, readers: 4, stop.Token);
        await Deadline.WaitUntilAsync(() => load.History.Count().Reads > 3000 && load.History.AcknowledgedWrites > 3000 || run.IsCompleted, "3000 writes and reads");
        await stop.CancelAsync();
        await run;
        await load.ReadAllAsync(device);
        var result = RegisterChecker.Check(load.History);
        AssertValid(result);
        Assert.Equal(64, result.Blocks);
        Assert.Equal(0, result.Counts.FailedWrites + result.Counts.UnknownWrites + result.Counts.PendingWrites);
        Assert.Equal(64, load.WrittenBlocks().Length);
    }

    [Fact]
    public async Task FailedWritesAreRecordedAsFailedAndCorruptReadsAreFound()
    {
        await using var device = new FaultInjectionBlockDevice(new MemoryBlockDevice(1 << 20));
        var load = new RegisterLoad(new RegisterHistory(), firstBlock: 0, blocks: 32, writers: 2) { PauseAfterFailure = TimeSpan.Zero };
        device.Add(new FaultRule(FaultKind.Error, operation: BlockOperation.Write, count: 50));
        using var stop = new CancellationTokenSource();
        var run = load.RunAsync(device, readers: 2, stop.Token);
        await Deadline.WaitUntilAsync(() => load.History.AcknowledgedWrites > 500 || run.IsCompleted, "500 writes after the failures");
        await stop.CancelAsync();
        await run;
        var result = RegisterChecker.Check(load.History);
        AssertValid(result);
        Assert.Equal(50, result.Counts.FailedWrites);

        device.Add(new FaultRule(FaultKind.CorruptRead, count: 1));
        await load.ReadAllAsync(device, depth: 1);
        AssertOnly(RegisterChecker.Check(load.History), RegisterViolationKind.Corrupt);
    }

    [Fact]
    public async Task AnOlderValuePutBackBehindTheLoadsBackIsALostWrite()
    {
        await using var device = new MemoryBlockDevice(1 << 20);
        var load = new RegisterLoad(new RegisterHistory(), firstBlock: 0, blocks: 8, writers: 1);
        using (var stop = new CancellationTokenSource())
        {
            var run = load.RunAsync(device, readers: 1, stop.Token);
            await Deadline.WaitUntilAsync(() => load.History.AcknowledgedWrites > 100 || run.IsCompleted, "100 writes");
            await stop.CancelAsync();
            await run;
        }

        // Block 3 rolls back to its first value, as a replica that missed the later writes would hold it.
        using var old = new AlignedBuffer(RegisterBlock.Size);
        RegisterBlock.Encode(old.Span, 3, 1, 1);
        await device.WriteAsync(3 * RegisterBlock.Size, old.Memory);
        await load.ReadAllAsync(device, depth: 1);
        var result = RegisterChecker.Check(load.History);
        Assert.Equal(3, Assert.Single(result.Violations).Block);
        AssertOnly(result, RegisterViolationKind.LostWrite);
    }

    [Fact]
    public async Task PowerLossesOnAVolatileCacheUndoOnlyWhatNoFlushCoveredAndAFlushedValueRolledBackIsFound()
    {
        var inner = new MemoryBlockDevice(1 << 20);
        await using var device = new PowerLossBlockDevice(inner);
        var load = new RegisterLoad(new RegisterHistory(), firstBlock: 0, blocks: 32, writers: 4);
        for (int round = 0; round < 3; round++)
        {
            using (var stop = new CancellationTokenSource())
            {
                var run = load.RunAsync(device, readers: 2, stop.Token, seed: round + 1);
                long target = load.History.AcknowledgedWrites + 300;
                await Deadline.WaitUntilAsync(() => load.History.AcknowledgedWrites > target || run.IsCompleted, "300 writes");
                Assert.True(await load.FlushAsync(device), load.Errors);
                target = load.History.AcknowledgedWrites + 300;
                await Deadline.WaitUntilAsync(() => load.History.AcknowledgedWrites > target || run.IsCompleted, "300 writes after the flush");
                await stop.CancelAsync();
                await run;
            }

            load.History.Crash();
            await device.SimulateCrashAsync(new Random(round)); // each unflushed block keeps a random version, or none
            await load.ReadAllAsync(device);
        }

        var result = RegisterChecker.Check(load.History);
        AssertValid(result);
        Assert.Equal(3, result.Counts.Crashes);
        Assert.True(UndoneByCrashes(load.History) > 0, "no power loss undid an acknowledged write: the test would not show that this is legal");

        // Everything flushed, then a block goes back to its first value behind the device's back.
        Assert.True(await load.FlushAsync(device), load.Errors);
        var first = load.History.Operations(5).First(o => o.Kind == RegisterOperationKind.Write && o.Sequence == 1);
        using (var old = new AlignedBuffer(RegisterBlock.Size))
        {
            RegisterBlock.Encode(old.Span, 5, first.Writer, 1);
            await inner.WriteAsync(5 * RegisterBlock.Size, old.Memory);
        }

        load.History.Crash();
        await device.SimulateCrashAsync();
        await load.ReadAllAsync(device);
        var rolledBack = RegisterChecker.Check(load.History);
        AssertOnly(rolledBack, RegisterViolationKind.LostFlushedWrite);
        Assert.Equal(5, rolledBack.Violations.Single().Block);
    }

    // Blocks whose first read after a power loss saw an older value than the last write acknowledged before it.
    private static int UndoneByCrashes(RegisterHistory history)
    {
        int undone = 0;
        foreach (long block in history.Blocks)
        {
            var ops = history.Operations(block);
            foreach (long crash in history.Crashes)
            {
                var acked = ops.Where(o => o.Kind == RegisterOperationKind.Write && o.Outcome == RegisterOutcome.Ok && o.Completed < crash).Select(o => o.Sequence).DefaultIfEmpty(0).Max();
                var read = ops.Where(o => o.Kind == RegisterOperationKind.Read && o.Outcome == RegisterOutcome.Ok && o.Invoked > crash).MinBy(o => o.Invoked);
                if (read is not null && read.Observed.Sequence < acked)
                {
                    undone++;
                }
            }
        }

        return undone;
    }
}
