using System.Globalization;

namespace Hci.Samples.Shared;

/// <summary>Durations on the command line: a whole number with a unit, <c>500ms</c>, <c>90s</c>, <c>10m</c>, <c>1h</c>.</summary>
internal static class DurationText
{
    /// <summary>A check for the command line: null when the text is a duration, else what is wrong.</summary>
    public static string? Check(string text) => TryParse(text, out _) ? null : "expected a duration like 500ms, 90s, 10m or 1h (at most 30 days)";

    /// <summary>Parses a checked duration.</summary>
    public static TimeSpan Parse(string text) => TryParse(text, out var value) ? value : throw new FormatException($"'{text}' is not a duration");

    /// <summary>Parses a duration.</summary>
    public static bool TryParse(string text, out TimeSpan value)
    {
        value = default;
        (string unit, long ms) = text.EndsWith("ms", StringComparison.Ordinal) ? ("ms", 1L)
            : text.EndsWith('s') ? ("s", 1000L)
            : text.EndsWith('m') ? ("m", 60_000L)
            : text.EndsWith('h') ? ("h", 3_600_000L)
            : (string.Empty, 0L);
        if (ms == 0 || !long.TryParse(text.AsSpan(0, text.Length - unit.Length), NumberStyles.None, CultureInfo.InvariantCulture, out long count)
            || count <= 0 || count > 30L * 24 * 3_600_000 / ms)
        {
            return false;
        }

        value = TimeSpan.FromMilliseconds(count * ms);
        return true;
    }

    /// <summary>A duration for people: <c>9m 59s</c>, <c>42s</c>.</summary>
    public static string Format(TimeSpan value)
    {
        if (value < TimeSpan.Zero)
        {
            value = TimeSpan.Zero;
        }

        return value.TotalHours >= 1 ? string.Create(CultureInfo.InvariantCulture, $"{(int)value.TotalHours}h {value.Minutes}m")
            : value.TotalMinutes >= 1 ? string.Create(CultureInfo.InvariantCulture, $"{value.Minutes}m {value.Seconds}s")
            : string.Create(CultureInfo.InvariantCulture, $"{value.Seconds}s");
    }
}
