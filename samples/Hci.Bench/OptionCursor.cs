namespace Hci.Bench;

/// <summary>Walks fio-style arguments: <c>--name=value</c>, <c>--name value</c> and bare flags.</summary>
internal sealed class OptionCursor(string[] args)
{
    private int _index = -1;

    /// <summary>The current option's name, without the dashes.</summary>
    public string Name { get; private set; } = string.Empty;

    /// <summary>The value given after '=', or null.</summary>
    public string? Inline { get; private set; }

    /// <summary>Moves to the next option.</summary>
    /// <returns>False at the end.</returns>
    /// <exception cref="BenchUsageException">An argument does not start with --.</exception>
    public bool Next()
    {
        if (++_index >= args.Length)
        {
            return false;
        }

        string arg = args[_index];
        if (!arg.StartsWith("--", StringComparison.Ordinal))
        {
            throw new BenchUsageException($"unexpected argument '{arg}': options start with --");
        }

        string name = arg[2..];
        int eq = name.IndexOf('=');
        Inline = eq >= 0 ? name[(eq + 1)..] : null;
        Name = eq >= 0 ? name[..eq] : name;
        return true;
    }

    /// <summary>The option's value: after '=', or the next argument.</summary>
    /// <returns>The value.</returns>
    /// <exception cref="BenchUsageException">There is none.</exception>
    public string Value()
    {
        if (Inline != null)
        {
            return Inline;
        }

        if (_index + 1 >= args.Length)
        {
            throw new BenchUsageException($"--{Name} needs a value");
        }

        return args[++_index];
    }
}
