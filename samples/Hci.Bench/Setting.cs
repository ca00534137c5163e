using System.CommandLine;
using Hci.Samples.Shared;
using Microsoft.Extensions.Configuration;

namespace Hci.Bench;

/// <summary>
/// One of hci-bench's options, defined once: its flag (also taken with '_' and '-' swapped, as fio takes them), its
/// setting's name in the --config file and the environment (fio's: <c>time_based</c>, <c>output_format</c>), its help, and how a value is read into
/// <typeparamref name="T"/> (throwing <see cref="BenchUsageException"/> with a message that says what to fix). The
/// command line checks its values with the same reader as the settings from the file and the environment.
/// </summary>
internal sealed record Setting<T>(string Flag, string HelpName, string Description, Action<T, string> Read, string[]? Aliases = null, bool OptionalValue = false)
    where T : new()
{
    /// <summary>The setting's name: fio's (the flag without its dashes, '-' written '_').</summary>
    public string Key => Flag[2..].Replace('-', '_');

    /// <summary>Adds <paramref name="settings"/> to <paramref name="cli"/>.</summary>
    public static SampleCommandLine CommandLine(SampleCommandLine cli, IEnumerable<Setting<T>> settings)
    {
        cli.WholeMessages = true;
        foreach (var s in settings)
        {
            var aliases = new List<string>(s.Aliases ?? []);
            foreach (string name in (string[])[s.Flag, .. aliases])
            {
                string other = "--" + (name[2..].Contains('_', StringComparison.Ordinal) ? name[2..].Replace('_', '-') : name[2..].Replace('-', '_'));
                if (other != name && !aliases.Contains(other))
                {
                    aliases.Add(other);
                }
            }

            cli.Text(s.Flag, s.Key, s.HelpName, s.Description, s.Check, aliases: [.. aliases], optionalValue: s.OptionalValue);
        }

        return cli;
    }

    /// <summary>Parses <paramref name="args"/> and builds the configuration.</summary>
    /// <exception cref="BenchHelpException">Help was asked for.</exception>
    /// <exception cref="BenchUsageException">A mistake.</exception>
    public static IConfiguration Configuration(SampleCommandLine cli, string[] args)
    {
        var result = cli.ParseOnly(args);
        if (result.Action is System.CommandLine.Help.HelpAction)
        {
            throw new BenchHelpException(result);
        }

        var errors = SampleCommandLine.Errors(result);
        if (errors.Count > 0)
        {
            throw new BenchUsageException(string.Join("; ", errors));
        }

        try
        {
            return cli.Configuration(result);
        }
        catch (UsageException e)
        {
            throw new BenchUsageException(e.Message);
        }
    }

    /// <summary>Reads every setting that <paramref name="configuration"/> has into <paramref name="target"/>.</summary>
    /// <exception cref="BenchUsageException">A value is wrong, or a setting is unknown.</exception>
    public static void Apply(SampleCommandLine cli, IConfiguration configuration, IEnumerable<Setting<T>> settings, T target)
    {
        try
        {
            cli.RejectUnknown(configuration, cli.Keys);
        }
        catch (UsageException e)
        {
            throw new BenchUsageException(e.Message);
        }

        foreach (var s in settings)
        {
            if (configuration[s.Key] is { } value)
            {
                s.Read(target, value);
            }
        }
    }

    private string? Check(string value)
    {
        try
        {
            Read(new T(), value);
            return null;
        }
        catch (BenchUsageException e)
        {
            return e.Message;
        }
    }
}
