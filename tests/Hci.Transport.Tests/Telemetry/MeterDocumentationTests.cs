using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Reflection;
using System.Runtime.CompilerServices;
using Hci.Core.Buffers;
using Hci.Core.Devices;
using Hci.Scheduling;
using Hci.Transport.Vhost;

namespace Hci.Transport.Tests.Telemetry;

/// <summary>
/// Every instrument the SDK publishes is in the 'Meters' table of docs/telemetry.md with its meter, kind, unit and
/// tags, and the table lists nothing that is not published: the document cannot rot unnoticed.
/// </summary>
public sealed class MeterDocumentationTests
{
    [Fact]
    public async Task EveryInstrumentTheComponentsPublishIsDocumentedWithItsKindUnitAndTags()
    {
        var published = new ConcurrentDictionary<(string Meter, string Name), Instrument>();
        var tagKeys = new ConcurrentDictionary<(string Meter, string Name), ConcurrentDictionary<string, bool>>();
        using var listener = new MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name.StartsWith("Hci.", StringComparison.Ordinal))
                {
                    published.TryAdd((instrument.Meter.Name, instrument.Name), instrument);
                    l.EnableMeasurementEvents(instrument);
                }
            },
        };
        void Record<T>(Instrument instrument, T value, ReadOnlySpan<KeyValuePair<string, object?>> tags, object? state)
        {
            var keys = tagKeys.GetOrAdd((instrument.Meter.Name, instrument.Name), _ => new());
            foreach (var tag in tags)
            {
                keys.TryAdd(tag.Key, true);
            }
        }

        listener.SetMeasurementEventCallback<long>(Record);
        listener.SetMeasurementEventCallback<double>(Record);
        listener.Start();

        // Meters held in static fields are created with their type: create them all, whether or not the run below
        // touches their component.
        foreach (var type in TelemetryDoc.SdkAssemblies().SelectMany(a => a.GetTypes()))
        {
            if (type.GetFields(BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic).Any(f => f.FieldType == typeof(Meter)))
            {
                RuntimeHelpers.RunClassConstructor(type.TypeHandle);
            }
        }

        // A running set: a scheduled device served over vhost-user, and a client doing I/O through it.
        string dir = Directory.CreateTempSubdirectory("hci-meters-").FullName;
        try
        {
            string socket = Path.Combine(dir, "s.sock");
            using var device = new ScheduledBlockDevice(new MemoryBlockDevice(16 << 20), new SchedulerOptions { Kind = SchedulerKind.Fifo });
            using var server = new VhostUserBlkServer(device, new VhostUserBlkServerOptions { SocketPath = socket, MaxQueues = 1, ReactorThreads = 1 });
            server.Start();
            await using (var client = VhostUserBlkClient.Connect(new VhostUserBlkClientOptions { SocketPath = socket, QueueSize = 16 }))
            {
                using var buffer = new AlignedBuffer(4096);
                for (int i = 0; i < 64; i++)
                {
                    await client.WriteAsync(i * 4096L, buffer.Memory);
                    await client.ReadAsync(i * 4096L, buffer.Memory);
                }
            }

            listener.RecordObservableInstruments();
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }

        var documented = TelemetryDoc.Table("Meters").ToDictionary(c => (c[0], c[1]), c => (Kind: c[2], Unit: c[3], Tags: c[4]));
        var problems = new List<string>();
        foreach (var ((meter, name), instrument) in published.OrderBy(p => p.Key))
        {
            string kind = Kind(instrument);
            string unit = instrument.Unit ?? "";
            if (!documented.TryGetValue((meter, name), out var row))
            {
                string tags = tagKeys.TryGetValue((meter, name), out var seen) ? string.Join(", ", seen.Keys.Order().Select(k => $"`{k}`")) : "?";
                problems.Add($"not documented: | `{meter}` | `{name}` | {kind.Replace("<", "&lt;").Replace(">", "&gt;")} | `{unit}` | {tags} | {instrument.Description} |");
                continue;
            }

            if (row.Kind != kind)
            {
                problems.Add($"{meter} {name}: documented as {row.Kind}, published as {kind}");
            }

            if (row.Unit != unit)
            {
                problems.Add($"{meter} {name}: documented in '{row.Unit}', published in '{unit}'");
            }

            if (tagKeys.TryGetValue((meter, name), out var keys))
            {
                var listed = row.Tags.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Select(t => t.Trim('`')).Order().ToArray();
                var measured = keys.Keys.Order().ToArray();
                if (!listed.SequenceEqual(measured))
                {
                    problems.Add($"{meter} {name}: documented tags [{string.Join(", ", listed)}], measured with [{string.Join(", ", measured)}]");
                }
            }
        }

        foreach (var key in documented.Keys.Where(k => !published.ContainsKey(k)))
        {
            problems.Add($"documented but not published (renamed or removed?): {key.Item1} {key.Item2}");
        }

        Assert.True(problems.Count == 0, "docs/telemetry.md's 'Meters' table is out of date:\n" + string.Join('\n', problems));

        // The run measured the data path's instruments: the table's tags were checked against real measurements.
        foreach (string name in new[] { "hci.vhost.requests", "hci.reactor.turns", "hci.scheduler.ios", "hci.request.stage.count" })
        {
            Assert.True(tagKeys.Keys.Any(k => k.Name == name), $"{name} was never measured during the run");
        }
    }

    // The instrument's kind as the table writes it: ObservableCounter<long>, Histogram<double>, ...
    private static string Kind(Instrument instrument)
    {
        var type = instrument.GetType();
        string name = type.Name[..type.Name.IndexOf('`', StringComparison.Ordinal)];
        var arg = type.GetGenericArguments()[0];
        string alias = arg == typeof(long) ? "long" : arg == typeof(double) ? "double" : arg == typeof(int) ? "int" : arg.Name;
        return $"{name}<{alias}>";
    }
}
