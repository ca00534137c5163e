using Hci.Core.Blocks;

namespace Hci.Scheduling.Tests;

/// <summary>What every scheduler does, whatever its policy.</summary>
public sealed class SchedulerContractTests
{
    public static TheoryData<string> Kinds => new() { "fifo", "limits", "mclock", "hybrid" };

    internal static IoScheduler<object> Create(string kind) => kind switch
    {
        "fifo" => new FifoScheduler<object>(),
        "limits" => new LimitsScheduler<object>(new LimitsSchedulerOptions()),
        "mclock" => new MClockScheduler<object>(new MClockSchedulerOptions()),
        "hybrid" => new HybridScheduler<object>(new HybridSchedulerOptions()),
        _ => throw new ArgumentOutOfRangeException(nameof(kind)),
    };

    [Theory]
    [MemberData(nameof(Kinds))]
    public void EveryIoEnqueuedIsDequeuedExactlyOnceWhenNothingLimitsIt(string kind)
    {
        var s = Create(kind);
        var items = Enumerable.Range(0, 1000).Select(i => new object()).ToArray();
        for (int i = 0; i < items.Length; i++)
        {
            s.Enqueue(items[i], new IoDescriptor(i % 3 == 0 ? IoClass.Container : IoClass.Vm, i % 7, BlockOperation.Read, i * 4096L, 4096, 0));
        }

        Assert.Equal(1000, s.Count);
        var seen = new HashSet<object>(ReferenceEqualityComparer.Instance);
        long now = 0;
        while (s.Count > 0)
        {
            if (s.TryDequeue(now, out var item, out var io))
            {
                Assert.True(seen.Add(item));
                s.OnCompleted(io, now);
            }
            else
            {
                long next = s.NextEligibleNs(now);
                Assert.True(next > now && next != long.MaxValue, "a scheduler holding I/O must say when it may go");
                now = next;
            }
        }

        Assert.Equal(1000, seen.Count);
        Assert.False(s.TryDequeue(now, out _, out _));
        Assert.Equal(long.MaxValue, s.NextEligibleNs(now));
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void AnUnknownTenantIsNotThrottledAndAnEmptySchedulerGivesNothing(string kind)
    {
        var s = Create(kind);
        Assert.False(s.IsThrottled(42, 0));
        Assert.False(s.TryDequeue(0, out _, out _));
        Assert.Equal(0, s.Count);
    }
}
