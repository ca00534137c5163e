using System.Globalization;

namespace Hci.Paper.Report;

/// <summary>A CSV file with a header line, read by column name; numbers in the invariant culture.</summary>
internal sealed class Csv
{
    private readonly Dictionary<string, int> _columns;
    private readonly List<string[]> _rows;

    private Csv(string path, Dictionary<string, int> columns, List<string[]> rows)
    {
        Path = path;
        _columns = columns;
        _rows = rows;
    }

    public string Path { get; }

    public int Count => _rows.Count;

    /// <summary>The file at <paramref name="path"/>, or null when it is not there (that figure was not measured).</summary>
    public static Csv? TryRead(string path)
    {
        if (!File.Exists(path))
        {
            return null;
        }

        var lines = File.ReadAllLines(path).Where(l => l.Trim().Length > 0).ToList();
        if (lines.Count == 0)
        {
            throw new FormatException($"{path}: empty (expected a header line)");
        }

        var header = lines[0].Split(',').Select(h => h.Trim()).ToArray();
        var columns = header.Select((h, i) => (h, i)).ToDictionary(x => x.h, x => x.i);
        var rows = lines.Skip(1).Select(l => l.Split(',').Select(c => c.Trim()).ToArray()).ToList();
        foreach (var row in rows.Where(r => r.Length != header.Length))
        {
            throw new FormatException($"{path}: a row has {row.Length} fields, the header {header.Length}");
        }

        return new Csv(path, columns, rows);
    }

    public string Text(int row, string column) => _rows[row][Index(column)];

    public double Number(int row, string column)
    {
        string text = Text(row, column);
        return double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double v)
            ? v
            : throw new FormatException($"{Path}: '{text}' in column {column} is not a number");
    }

    public double[] Numbers(string column) => Enumerable.Range(0, Count).Select(r => Number(r, column)).ToArray();

    private int Index(string column) =>
        _columns.TryGetValue(column, out int i) ? i : throw new FormatException($"{Path}: no column '{column}'");
}
