using System.Diagnostics.Metrics;

namespace Hci.Core.Reactors;

/// <summary>
/// The reactors' instruments, on the meter <see cref="MeterName"/> (read them with a
/// <see cref="MeterListener"/>, <c>dotnet-counters</c> or OpenTelemetry). Each measurement is tagged <c>reactor</c>
/// with the reactor's name.
/// </summary>
/// <remarks>
/// <c>hci.reactor.allocated_bytes</c> (bytes allocated on reactor threads: flat in steady state, as the data path
/// allocates nothing per I/O), <c>hci.reactor.turns</c> and <c>hci.reactor.sleeps</c> (their ratio shows how much of
/// the time a reactor polls rather than sleeps).
/// </remarks>
public static class ReactorMetrics
{
    /// <summary>The meter's name.</summary>
    public const string MeterName = "Hci.Core.Reactor";

    private static readonly Meter s_meter = new(MeterName);

    static ReactorMetrics()
    {
        s_meter.CreateObservableCounter("hci.reactor.allocated_bytes", () => Observe(r => r.AllocatedBytes), "By", "Bytes allocated on reactor threads.");
        s_meter.CreateObservableCounter("hci.reactor.turns", () => Observe(r => r.Turns), "{turn}", "Reactor loop turns.");
        s_meter.CreateObservableCounter("hci.reactor.sleeps", () => Observe(r => r.Sleeps), "{sleep}", "Times a reactor slept.");
    }

    /// <summary>Makes sure the instruments exist (they are created on first use of this type).</summary>
    public static void EnsureCreated()
    {
    }

    private static IEnumerable<Measurement<long>> Observe(Func<Reactor, long> read)
    {
        foreach (var reactor in Reactor.Live)
        {
            yield return new Measurement<long>(read(reactor), new KeyValuePair<string, object?>("reactor", reactor.Name));
        }
    }
}
