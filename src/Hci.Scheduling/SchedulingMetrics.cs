using System.Diagnostics.Metrics;
using Hci.Core.Blocks;

namespace Hci.Scheduling;

/// <summary>
/// The scheduling layer's meters (System.Diagnostics.Metrics, meter "Hci.Scheduling"), tagged by I/O class and
/// tenant: I/Os and bytes dispatched, time queued in the scheduler (histogram, microseconds), time spent
/// throttled, and the batches throttled I/O was released in. Nothing is recorded, and nothing allocated, while no listener is enabled.
/// </summary>
public static class SchedulingMetrics
{
    /// <summary>The meter's name, for listeners and exporters.</summary>
    public const string MeterName = "Hci.Scheduling";

    private static readonly Meter s_meter = new(MeterName);
    private static readonly object[] s_classes = [IoClass.Vm.ToString().ToLowerInvariant(), IoClass.Container.ToString().ToLowerInvariant(), IoClass.Background.ToString().ToLowerInvariant()];
    private static readonly Lock s_tenantLock = new();
    private static object[] s_tenants = [];

    internal static readonly Counter<long> Ios = s_meter.CreateCounter<long>("hci.scheduler.ios", "{io}", "I/Os dispatched to the device.");
    internal static readonly Counter<long> Bytes = s_meter.CreateCounter<long>("hci.scheduler.bytes", "By", "Bytes dispatched to the device.");
    internal static readonly Histogram<double> Queued = s_meter.CreateHistogram<double>("hci.scheduler.queued", "us", "Time an I/O waited in the scheduler.");
    internal static readonly Counter<double> Throttled = s_meter.CreateCounter<double>("hci.scheduler.throttled", "us", "Time a tenant's I/O was held back while the scheduler throttled it.");
    internal static readonly Counter<long> Batches = s_meter.CreateCounter<long>("hci.scheduler.batches", "{batch}", "Batches a throttled tenant's I/O was released in (the hybrid scheduler's VM batches).");

    internal static bool Enabled => Ios.Enabled || Bytes.Enabled || Queued.Enabled || Throttled.Enabled || Batches.Enabled;

    internal static void RecordDispatch(IoClass cls, int tenant, long bytes, long queuedNs)
    {
        var tags = Tags(cls, tenant);
        Ios.Add(1, tags);
        Bytes.Add(bytes, tags);
        Queued.Record(queuedNs / 1000.0, tags);
    }

    internal static void RecordThrottled(IoClass cls, int tenant, long ns) => Throttled.Add(ns / 1000.0, Tags(cls, tenant));

    internal static void RecordBatch(IoClass cls, int tenant) => Batches.Add(1, Tags(cls, tenant));

    private static System.Diagnostics.TagList Tags(IoClass cls, int tenant)
        => new() { { "hci.io.class", s_classes[(int)cls % s_classes.Length] }, { "hci.tenant", BoxedTenant(tenant) } };

    /// <summary>Tenant ids boxed once each (the only allocation, on a tenant's first recording).</summary>
    private static object BoxedTenant(int tenant)
    {
        var tenants = Volatile.Read(ref s_tenants);
        if ((uint)tenant < (uint)tenants.Length && tenants[tenant] != null)
        {
            return tenants[tenant];
        }

        if (tenant < 0 || tenant >= 65536)
        {
            return tenant; // out of the cached range: boxed per call
        }

        lock (s_tenantLock)
        {
            tenants = s_tenants;
            if (tenant >= tenants.Length)
            {
                Array.Resize(ref tenants, Math.Max(tenant + 1, tenants.Length * 2));
            }

            tenants[tenant] ??= tenant;
            Volatile.Write(ref s_tenants, tenants);
            return tenants[tenant];
        }
    }
}
