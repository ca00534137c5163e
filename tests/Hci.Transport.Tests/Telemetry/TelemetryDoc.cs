using System.Net;
using System.Reflection;

namespace Hci.Transport.Tests.Telemetry;

/// <summary>
/// docs/telemetry.md, read as the tests need it: the rows of the table under a heading, and the assemblies of the
/// SDK (every Hci.* library beside the tests, test kits left out) whose telemetry it documents.
/// </summary>
internal static class TelemetryDoc
{
    /// <summary>The document's path, found from the test's directory (the repository root holds Hci.sln).</summary>
    public static string Path
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            {
                if (File.Exists(System.IO.Path.Combine(dir.FullName, "Hci.sln")))
                {
                    return System.IO.Path.Combine(dir.FullName, "docs", "telemetry.md");
                }
            }

            throw new InvalidOperationException("The repository root (Hci.sln) is not above the test's directory.");
        }
    }

    /// <summary>
    /// The body rows of the first table after the heading whose text is <paramref name="heading"/>, each a list of
    /// cells: trimmed, HTML entities decoded, one pair of enclosing backticks removed.
    /// </summary>
    public static List<string[]> Table(string heading)
    {
        string[] lines = File.ReadAllLines(Path);
        int at = Array.FindIndex(lines, l => l.StartsWith('#') && l.TrimStart('#').Trim() == heading);
        Assert.True(at >= 0, $"docs/telemetry.md has no heading '{heading}'");
        while (at < lines.Length && !lines[at].StartsWith('|'))
        {
            at++;
        }

        var rows = new List<string[]>();
        for (int i = at + 2; i < lines.Length && lines[i].StartsWith('|'); i++) // after the header and its rule
        {
            rows.Add(lines[i].Trim().Trim('|').Split('|').Select(Cell).ToArray());
        }

        Assert.True(rows.Count > 0, $"docs/telemetry.md has no table under '{heading}'");
        return rows;
    }

    /// <summary>The SDK's assemblies: every Hci.* library in the test's directory but the tests and the test kit.</summary>
    public static IReadOnlyList<Assembly> SdkAssemblies()
    {
        var assemblies = Directory.GetFiles(AppContext.BaseDirectory, "Hci.*.dll")
            .Select(f => System.IO.Path.GetFileNameWithoutExtension(f))
            .Where(n => !n.EndsWith(".Tests", StringComparison.Ordinal) && n != "Hci.Testing")
            .Order(StringComparer.Ordinal)
            .Select(n => Assembly.Load(new AssemblyName(n)))
            .ToList();
        string[] names = assemblies.Select(a => a.GetName().Name!).ToArray();
        foreach (string expected in new[] { "Hci.Core", "Hci.Transport", "Hci.Scheduling", "Hci.Cluster" })
        {
            Assert.True(names.Contains(expected), $"{expected} is not beside the tests (found {string.Join(", ", names)}): reference it from Hci.Transport.Tests");
        }

        return assemblies;
    }

    private static string Cell(string cell)
    {
        string text = WebUtility.HtmlDecode(cell.Trim());
        return text.Length >= 2 && text[0] == '`' && text[^1] == '`' ? text[1..^1] : text;
    }
}
