using BenchmarkDotNet.Attributes;
using Hci.Core.Blocks;
using Hci.Scheduling;

namespace Hci.Scheduling.Benchmarks;

/// <summary>
/// Cost of one enqueue plus one dispatch (and its completion) per scheduler, with a standing backlog of four
/// I/Os per tenant so that every dispatch chooses among all tenants.
/// </summary>
[MemoryDiagnoser]
public class SchedulerBenchmarks
{
    private const int Ops = 4096;
    private IoScheduler<object> _scheduler = null!;
    private object[] _items = null!;
    private long _now;
    private int _next;

    [Params("fifo", "limits", "mclock", "hybrid")]
    public string Scheduler { get; set; } = "fifo";

    [Params(1, 64, 1024)]
    public int Tenants { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _scheduler = Scheduler switch
        {
            "limits" => new LimitsScheduler<object>(LimitsOptions(Tenants)),
            "mclock" => new MClockScheduler<object>(new MClockSchedulerOptions()),
            "hybrid" => new HybridScheduler<object>(new HybridSchedulerOptions()),
            _ => new FifoScheduler<object>(),
        };
        _items = Enumerable.Range(0, 64).Select(_ => new object()).ToArray();
        for (int i = 0; i < Tenants * 4; i++)
        {
            _scheduler.Enqueue(_items[i % _items.Length], Descriptor(i % Tenants));
        }
    }

    [Benchmark(OperationsPerInvoke = Ops)]
    public int EnqueueAndDispatch()
    {
        int dispatched = 0;
        for (int i = 0; i < Ops; i++)
        {
            _now += 2_000; // 500K IOPS of virtual time
            int tenant = _next++ % Tenants;
            _scheduler.Enqueue(_items[i & 63], Descriptor(tenant));
            if (_scheduler.TryDequeue(_now, out _, out var io))
            {
                _scheduler.OnCompleted(io, _now);
                dispatched++;
            }
        }

        return dispatched;
    }

    private IoDescriptor Descriptor(int tenant)
        => new(tenant % 4 == 0 ? IoClass.Container : IoClass.Vm, tenant, BlockOperation.Read, tenant * 4096L, 4096, _now);

    private static LimitsSchedulerOptions LimitsOptions(int tenants)
    {
        var o = new LimitsSchedulerOptions();
        for (int t = 0; t < tenants; t++)
        {
            o.Tenants[t] = new TenantLimits { Iops = 1_000_000, BytesPerSecond = 4e9 };
        }

        return o;
    }
}
