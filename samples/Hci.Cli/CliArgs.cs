using Hci.Samples.Shared;

namespace Hci.Cli;

/// <summary>A command's words and options: <c>--name value</c>, <c>--name=value</c> or a bare <c>--flag</c>.</summary>
internal sealed class CliArgs
{
    private static readonly HashSet<string> Flags = ["--json", "--force", "--help", "-h"];
    private readonly Dictionary<string, string?> _options = new(StringComparer.Ordinal);
    private readonly HashSet<string> _used = new(StringComparer.Ordinal);

    public CliArgs(IReadOnlyList<string> args)
    {
        for (int i = 0; i < args.Count; i++)
        {
            string arg = args[i];
            if (!arg.StartsWith('-') || arg == "-")
            {
                Words.Add(arg);
                continue;
            }

            string name = arg;
            string? value = null;
            int eq = arg.IndexOf('=', StringComparison.Ordinal);
            if (eq > 0)
            {
                name = arg[..eq];
                value = arg[(eq + 1)..];
            }
            else if (!Flags.Contains(arg))
            {
                if (i + 1 >= args.Count)
                {
                    throw new CliUsageException($"{arg} needs a value.");
                }

                value = args[++i];
            }

            if (!_options.TryAdd(name, value))
            {
                throw new CliUsageException($"{name} is given twice.");
            }
        }
    }

    public List<string> Words { get; } = [];

    public bool Flag(string name)
    {
        _used.Add(name);
        return _options.ContainsKey(name);
    }

    public string? Option(string name)
    {
        _used.Add(name);
        return _options.TryGetValue(name, out var value) ? value ?? throw new CliUsageException($"{name} needs a value.") : null;
    }

    public string RequiredOption(string name, string example)
        => Option(name) ?? throw new CliUsageException($"{name} is required (e.g. {name} {example}).");

    public long Size(string name)
    {
        string text = RequiredOption(name, "10G");
        return SizeText.TryParse(text, out long bytes)
            ? bytes
            : throw new CliUsageException($"{name} {text} is not a size: give bytes, or a number with K, M, G or T (powers of 1024), e.g. 4096, 512M, 10G.");
    }

    public int Int(string name, int fallback)
    {
        string? text = Option(name);
        return text is null ? fallback
            : int.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int value) ? value
            : throw new CliUsageException($"{name} {text} is not a whole number.");
    }

    /// <summary>Refuses options the command did not read (a typo must not pass silently).</summary>
    public void CheckAllUsed()
    {
        foreach (string name in _options.Keys)
        {
            if (!_used.Contains(name))
            {
                throw new CliUsageException($"unknown option {name} for this command (hci --help lists them).");
            }
        }
    }
}
