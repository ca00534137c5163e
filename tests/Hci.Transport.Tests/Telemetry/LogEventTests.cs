using System.Reflection;
using Microsoft.Extensions.Logging;

namespace Hci.Transport.Tests.Telemetry;

/// <summary>
/// Every message the SDK logs is a [LoggerMessage] with a fixed, named event id that is unique across the SDK, inside
/// its component's range, and listed as it is in docs/telemetry.md.
/// </summary>
public sealed class LogEventTests
{
    private static readonly Lazy<IReadOnlyList<LogEvent>> s_events = new(Collect);

    [Fact]
    public void EveryEventIdIsUsedOnceAcrossTheSdk()
    {
        var repeated = s_events.Value.GroupBy(e => e.Id).Where(g => g.Count() > 1)
            .Select(g => $"{g.Key}: {string.Join(", ", g.Select(e => e.Where))}").ToList();
        Assert.True(repeated.Count == 0, "event ids used more than once:\n" + string.Join('\n', repeated));
    }

    [Fact]
    public void EveryEventHasANameAndAnIdInsideItsComponentsDocumentedRange()
    {
        var ranges = Ranges();
        var problems = new List<string>();
        foreach (var e in s_events.Value)
        {
            if (string.IsNullOrWhiteSpace(e.Name))
            {
                problems.Add($"{e.Where} (id {e.Id}) has no EventName");
            }

            var range = ranges.FirstOrDefault(r => r.Class == e.Class);
            if (range == default)
            {
                problems.Add($"{e.Class} logs event {e.Id} but has no row in the 'Event id ranges' table of docs/telemetry.md");
            }
            else if (e.Id < range.Low || e.Id > range.High)
            {
                problems.Add($"{e.Where} has id {e.Id}, outside its component's range {range.Low}-{range.High}");
            }
        }

        Assert.True(problems.Count == 0, string.Join('\n', problems));
    }

    [Fact]
    public void TheDocumentedRangesDoNotOverlapAndNameOnlyClassesThatLog()
    {
        var ranges = Ranges();
        foreach (var r in ranges)
        {
            Assert.True(r.Low <= r.High, $"range {r.Low}-{r.High} is empty");
            var overlapping = ranges.Where(o => o != r && o.Low <= r.High && r.Low <= o.High).ToList();
            Assert.True(overlapping.Count == 0, $"range {r.Low}-{r.High} overlaps {string.Join(", ", overlapping.Select(o => $"{o.Low}-{o.High}"))}");
        }

        var loaded = TelemetryDoc.SdkAssemblies().Select(a => a.GetName().Name).ToHashSet();
        foreach (var r in ranges.Where(r => r.Class != "-" && loaded.Contains(r.Assembly)))
        {
            Assert.True(s_events.Value.Any(e => e.Class == r.Class), $"the ranges table names {r.Class} in {r.Assembly}, which logs nothing (renamed?)");
        }
    }

    [Fact]
    public void TheEventTableListsEveryEventWithTheIdNameLevelAndMessageTheCodeDeclares()
    {
        var documented = TelemetryDoc.Table("Events").Select(c => Row(int.Parse(c[0]), c[1], c[2], c[3])).ToHashSet();
        var declared = s_events.Value.Select(e => Row(e.Id, e.Name, e.Level.ToString(), e.Message)).ToHashSet();
        var missing = declared.Except(documented).Order(StringComparer.Ordinal).ToList();
        var stale = documented.Except(declared).Order(StringComparer.Ordinal).ToList();
        Assert.True(
            missing.Count == 0 && stale.Count == 0,
            $"docs/telemetry.md's 'Events' table is out of date.\nRows to add (or correct):\n{string.Join('\n', missing)}\nRows to remove:\n{string.Join('\n', stale)}");
    }

    private static string Row(int id, string name, string level, string message) => $"| {id} | {name} | {level} | `{message}` |";

    private static List<(int Low, int High, string Class, string Assembly)> Ranges()
        => TelemetryDoc.Table("Event id ranges").Select(c =>
        {
            string[] bounds = c[0].Split('-');
            return (int.Parse(bounds[0]), int.Parse(bounds[1]), c[2], c[3]);
        }).ToList();

    private static IReadOnlyList<LogEvent> Collect()
    {
        var events = new List<LogEvent>();
        foreach (var assembly in TelemetryDoc.SdkAssemblies())
        {
            foreach (var type in assembly.GetTypes())
            {
                foreach (var method in type.GetMethods(BindingFlags.Static | BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly))
                {
                    if (method.GetCustomAttribute<LoggerMessageAttribute>() is { } a)
                    {
                        events.Add(new LogEvent(type.FullName!, method.Name, a.EventId, a.EventName ?? "", a.Level, a.Message));
                    }
                }
            }
        }

        Assert.True(events.Count > 50, $"only {events.Count} [LoggerMessage] methods were found in the SDK's assemblies");
        return events;
    }

    private sealed record LogEvent(string Class, string Method, int Id, string Name, LogLevel Level, string Message)
    {
        public string Where => $"{Class}.{Method}";
    }
}
