using Hci.Transport.Iscsi;

namespace Hci.Transport.Tests;

/// <summary>The task pool reuses tasks and their buffers, and holds its own and the shared buffer budget.</summary>
public sealed class IscsiTaskPoolTests
{
    [Fact]
    public void AReleasedTaskIsReusedWithItsBufferSoSteadyCommandsCreateNothing()
    {
        var pool = new IscsiTaskPool(maxTasks: 4, maxBufferedBytes: 1 << 20, shared: null);
        var first = pool.Take(4096)!;
        Assert.Equal(4096, first.Capacity);
        pool.Release(first);
        for (int i = 0; i < 100; i++)
        {
            var t = pool.Take(4096)!;
            Assert.Same(first, t);
            pool.Release(t);
        }

        Assert.Equal(1, pool.Created);
        pool.FreeBuffers();
        Assert.Equal(0, pool.BufferedBytes);
    }

    [Fact]
    public void WhenEveryTaskIsTakenTheNextCommandGetsNone()
    {
        var pool = new IscsiTaskPool(maxTasks: 2, maxBufferedBytes: 1 << 20, shared: null);
        Assert.NotNull(pool.Take(0));
        Assert.NotNull(pool.Take(0));
        Assert.Null(pool.Take(0));
    }

    [Fact]
    public void TheSharedBudgetIsHeldAndIdleBuffersAreGivenBackBeforeARefusal()
    {
        var budget = new Budget(64 * 1024);
        var pool = new IscsiTaskPool(maxTasks: 8, maxBufferedBytes: 1 << 30, shared: budget);
        var a = pool.Take(32 * 1024)!;
        var b = pool.Take(32 * 1024)!;
        Assert.Equal(64 * 1024, budget.Used);
        Assert.Null(pool.Take(4096)); // both buffers busy: nothing left
        pool.Release(a);
        var c = pool.Take(48 * 1024); // a's idle buffer is given back to make room... not enough for 64 KiB
        Assert.Null(c);
        Assert.Equal(32 * 1024, budget.Used); // ...but it was given back
        pool.Release(b);
        Assert.NotNull(pool.Take(64 * 1024));
        Assert.True(budget.Used <= 64 * 1024);
        pool.FreeBuffers();
        Assert.Equal(0, budget.Used);
    }

    [Fact]
    public void OneConnectionsOwnBoundHoldsEvenWhenTheSharedBudgetHasRoom()
    {
        var pool = new IscsiTaskPool(maxTasks: 8, maxBufferedBytes: 16 * 1024, shared: new Budget(1 << 30));
        Assert.NotNull(pool.Take(16 * 1024));
        Assert.Null(pool.Take(4096));
    }

    private sealed class Budget(long limit) : IIscsiBufferBudget
    {
        public long Used { get; private set; }

        public bool TryReserveBuffers(long bytes)
        {
            if (Used + bytes > limit)
            {
                return false;
            }

            Used += bytes;
            return true;
        }

        public void ReleaseBuffers(long bytes) => Used -= bytes;
    }
}
