using Hci.Core.Replication;
using Microsoft.Extensions.Time.Testing;

namespace Hci.Core.Tests.Replication;

/// <summary>
/// The recovery pace on a stepped clock with client latencies the test makes up: a fixed rate spaces copies by their
/// size over the rate; an adapting one starts at an eighth of the rate, halves while the clients are slower than the
/// factor allows (never below the floor), and grows back to the rate while they are not or while they are idle; the
/// latency it keeps to is the lowest of the clients' last ten seconds in which no copy ran.
/// </summary>
public sealed class RecoveryPacerTests
{
    private const long Region = 64 * 1024;
    private const long Max = 256L << 20;
    private const long Us = 1_000_000; // latency ticks per second: microseconds

    [Fact]
    public async Task AFixedRateSpacesCopiesByTheirSizeOverTheRate()
    {
        var clock = new FakeTimeProvider();
        var pacer = new RecoveryPacer(() => (0, 0), clock, Us, 1L << 20, 0);
        Assert.True(pacer.PaceAsync(Region, default).IsCompleted); // the first goes at once
        var second = pacer.PaceAsync(Region, default).AsTask();
        Assert.False(second.IsCompleted);
        clock.Advance(TimeSpan.FromMilliseconds(60));
        Assert.False(second.IsCompleted);
        clock.Advance(TimeSpan.FromMilliseconds(5));
        await second.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(1L << 20, pacer.Rate);
    }

    [Fact]
    public void NoRateMeansNoWait()
    {
        var pacer = new RecoveryPacer(() => (0, 0), new FakeTimeProvider(), Us, 0, 1.5);
        for (int i = 0; i < 1000; i++)
        {
            Assert.True(pacer.PaceAsync(Region, default).IsCompleted);
        }
    }

    [Fact]
    public void TheRateHalvesWhileTheClientsAreHurtAndGrowsBackWhenTheyAreNot()
    {
        var clients = new Clients();
        var clock = new FakeTimeProvider();
        var pacer = new RecoveryPacer(clients.Totals, clock, Us, Max, 1.5);

        // A few seconds of clients at 100 us before any copy.
        for (int i = 0; i < 3; i++)
        {
            clock.Advance(TimeSpan.FromSeconds(1));
            clients.Complete(1000, 100);
            pacer.Observe();
        }

        Assert.Equal(100, pacer.BaselineMicroseconds, 3);
        _ = pacer.PaceAsync(Region, default);
        Assert.Equal(Max / 8.0, pacer.Rate);

        void Step(int count, double us)
        {
            for (int i = 0; i < count; i++)
            {
                clock.Advance(TimeSpan.FromMilliseconds(100));
                clients.Complete(100, us);
                _ = pacer.PaceAsync(Region, default);
            }
        }

        // Within the factor: a quarter more per step, up to the configured rate.
        Step(1, 140);
        Assert.Equal(Max / 8.0 * 1.25, pacer.Rate);
        Step(20, 140);
        Assert.Equal(Max, pacer.Rate);

        // More than 1.5x slower: half per step, down to the floor and no further.
        Step(1, 151);
        Assert.Equal(Max / 2.0, pacer.Rate);
        Step(20, 400);
        Assert.Equal(RecoveryPacer.FloorBytesPerSecond, pacer.Rate);

        // Back within it, or idle (too few completions to judge): growing again.
        Step(1, 150);
        Assert.Equal(RecoveryPacer.FloorBytesPerSecond * 1.25, pacer.Rate);
        clock.Advance(TimeSpan.FromMilliseconds(100));
        clients.Complete(2, 5000);
        _ = pacer.PaceAsync(Region, default);
        Assert.Equal(RecoveryPacer.FloorBytesPerSecond * 1.25 * 1.25, pacer.Rate);
    }

    [Fact]
    public void TheLatencyKeptToLeavesOutTheSecondsCopiesRan()
    {
        var clients = new Clients();
        var clock = new FakeTimeProvider();
        var pacer = new RecoveryPacer(clients.Totals, clock, Us, Max, 1.5);
        clock.Advance(TimeSpan.FromSeconds(1));
        clients.Complete(1000, 100);
        pacer.Observe();
        Assert.Equal(100, pacer.BaselineMicroseconds, 3);

        // A recovery at 1000 us: those seconds do not count.
        for (int i = 0; i < 30; i++)
        {
            clock.Advance(TimeSpan.FromMilliseconds(100));
            clients.Complete(100, 1000);
            _ = pacer.PaceAsync(Region, default);
            if (i % 10 == 9)
            {
                pacer.Observe();
            }
        }

        Assert.Equal(100, pacer.BaselineMicroseconds, 3);

        // 3 s after the last copy the clients' seconds count again: the lowest of the last ten is kept to.
        clock.Advance(TimeSpan.FromSeconds(3));
        clients.Complete(1000, 1000);
        pacer.Observe();
        Assert.Equal(100, pacer.BaselineMicroseconds, 3); // that window still had copies in it
        clock.Advance(TimeSpan.FromSeconds(1));
        clients.Complete(1000, 300);
        pacer.Observe();
        Assert.Equal(100, pacer.BaselineMicroseconds, 3);
        for (int i = 0; i < 9; i++)
        {
            clock.Advance(TimeSpan.FromSeconds(1));
            clients.Complete(1000, 400);
            pacer.Observe();
        }

        Assert.Equal(300, pacer.BaselineMicroseconds, 3); // the 100 us second is more than ten windows back
        _ = pacer.PaceAsync(Region, default);
        Assert.Equal(Max / 8.0, pacer.Rate);
    }

    [Fact]
    public void ABurstOfSlowerWorkBeforeARecoveryDoesNotRaiseTheLatencyKeptTo()
    {
        var clients = new Clients();
        var clock = new FakeTimeProvider();
        var pacer = new RecoveryPacer(clients.Totals, clock, Us, Max, 1.5);
        foreach (double us in new[] { 250.0, 3000, 3000, 3000, 3000, 260 })
        {
            clock.Advance(TimeSpan.FromSeconds(1));
            clients.Complete(1000, us);
            pacer.Observe();
        }

        Assert.Equal(250, pacer.BaselineMicroseconds, 3);
        _ = pacer.PaceAsync(Region, default);
        clock.Advance(TimeSpan.FromMilliseconds(100));
        clients.Complete(100, 500);
        _ = pacer.PaceAsync(Region, default);
        Assert.Equal(Max / 16.0, pacer.Rate);
    }

    private sealed class Clients
    {
        private long _ticks;
        private long _count;

        public (long Ticks, long Count) Totals() => (_ticks, _count);

        public void Complete(int count, double microseconds)
        {
            _count += count;
            _ticks += (long)(count * microseconds);
        }
    }
}
