using Hci.Core.Buffers;

namespace Hci.Core.Tests.Buffers;

/// <summary>The per-I/O slot pool every front-end uses: reuse, limits, budgets, and no allocation in steady state.</summary>
public sealed class IoSlotPoolTests
{
    private sealed class Slot : IoSlot
    {
        public int Tag;

        protected override void Reset() => Tag = 0;
    }

    [Fact]
    public void ASlotComesBackWithItsBufferAndItsStateCleared()
    {
        using var pool = new IoSlotPool<Slot>(() => new Slot(), maxSlots: 4, maxBufferedBytes: 1 << 20);
        var a = pool.Take(10_000)!;
        Assert.Equal(16384, a.Capacity); // rounded up to a power of two
        Assert.True(a.InUse);
        a.Tag = 7;
        pool.Return(a);
        Assert.False(a.InUse);
        Assert.Equal(0, a.Tag);
        Assert.Same(a, pool.Take(4096));
        Assert.Equal(1, pool.Count);
        Assert.Throws<InvalidOperationException>(() => { pool.Return(a); pool.Return(a); });
    }

    [Fact]
    public void BeyondItsSlotsThePoolAnswersNullNotAnException()
    {
        using var pool = new IoSlotPool<Slot>(() => new Slot(), maxSlots: 2, maxBufferedBytes: 1 << 20);
        Assert.NotNull(pool.Take(0));
        Assert.NotNull(pool.Take(0));
        Assert.Null(pool.Take(0));
        Assert.Equal(2, pool.InUse);
    }

    [Fact]
    public void ABufferOverTheBudgetFirstTakesTheIdleSlotsBuffersThenIsRefused()
    {
        var shared = new IoBufferBudget(64 * 1024);
        using var pool = new IoSlotPool<Slot>(() => new Slot(), maxSlots: 4, maxBufferedBytes: 1 << 20, shared);
        var a = pool.Take(32 * 1024)!;
        var b = pool.Take(32 * 1024)!;
        Assert.Equal(64 * 1024, shared.Reserved);
        pool.Return(a);
        var c = pool.Take(64 * 1024); // a's idle buffer is given back to make room, still not enough with b's held
        Assert.Null(c);
        Assert.Equal(32 * 1024, shared.Reserved);
        pool.Return(b);
        var d = pool.Take(64 * 1024)!;
        Assert.Equal(64 * 1024, d.Capacity);
        Assert.Equal(64 * 1024, shared.Reserved);
        pool.Return(d);
        pool.Dispose();
        Assert.Equal(0, shared.Reserved);
        Assert.Equal(0, pool.BufferedBytes);
    }

    [Fact]
    public void AtShutdownTheSlotsInUseAreFoundThroughAllAndALateReturnStillFreesItsBuffer()
    {
        var shared = new IoBufferBudget(1 << 20);
        var pool = new IoSlotPool<Slot>(() => new Slot(), maxSlots: 4, maxBufferedBytes: 1 << 20, shared);
        var idle = pool.Take(4096)!;
        var waiting = pool.Take(4096)!;
        var stuck = pool.Take(4096)!;
        pool.Return(idle);
        Assert.Equal(3, pool.All.Count);

        // A front-end that shuts down gives back what it still holds (here all but the stuck one), then disposes.
        foreach (var s in pool.All)
        {
            if (s.InUse && s != stuck)
            {
                pool.Return(s);
            }
        }

        pool.Dispose();
        Assert.Equal(4096, shared.Reserved);
        Assert.False(waiting.InUse);
        Assert.Null(waiting.Buffer);

        pool.Return(stuck); // its device finished after all
        Assert.Null(stuck.Buffer);
        Assert.Equal(0, shared.Reserved);
        Assert.Equal(0, pool.BufferedBytes);
    }

    [Fact]
    public void APoolsOwnBoundHoldsEvenWhenTheSharedBudgetHasRoom()
    {
        var shared = new IoBufferBudget(1L << 30);
        using var pool = new IoSlotPool<Slot>(() => new Slot(), maxSlots: 8, maxBufferedBytes: 16 * 1024, shared);
        Assert.NotNull(pool.Take(16 * 1024));
        Assert.Null(pool.Take(4096));
        Assert.Equal(16 * 1024, shared.Reserved);
    }

    [Theory]
    [InlineData(-1)]
    [InlineData(int.MinValue)]
    public void ANegativeSizeIsRefused(int bytes)
    {
        using var pool = new IoSlotPool<Slot>(() => new Slot(), 2, 1 << 20);
        Assert.Throws<ArgumentOutOfRangeException>(() => pool.Take(bytes));
    }

    [Fact]
    public void TheLargestBufferIsRefusedByTheBudgetWithoutOverflow()
    {
        using var pool = new IoSlotPool<Slot>(() => new Slot(), 2, 1L << 30);
        Assert.Null(pool.Take(int.MaxValue));
        Assert.Equal(0, pool.BufferedBytes);
        Assert.Throws<ArgumentOutOfRangeException>(() => new IoBufferBudget(0));
        Assert.True(new IoBufferBudget(long.MaxValue).TryReserve(long.MaxValue));
    }

    [Fact]
    public void TakingAndReturningInSteadyStateAllocatesNothing()
    {
        using var pool = new IoSlotPool<Slot>(() => new Slot(), 64, 64L << 20);
        var held = new Slot[32];
        for (int round = 0; round < 2; round++)
        {
            for (int i = 0; i < held.Length; i++)
            {
                held[i] = pool.Take(4096 << (i % 4))!;
            }

            foreach (var s in held)
            {
                pool.Return(s);
            }
        }

        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int round = 0; round < 1000; round++)
        {
            for (int i = 0; i < held.Length; i++)
            {
                held[i] = pool.Take(4096 << (i % 4))!;
            }

            foreach (var s in held)
            {
                pool.Return(s);
            }
        }

        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }
}
