using System.CommandLine;
using System.CommandLine.Help;
using System.CommandLine.Parsing;
using System.Globalization;
using Microsoft.Extensions.Configuration;

namespace Hci.Samples.Shared;

/// <summary>A command-line or configuration mistake; the message says what to fix. The programs exit with 2.</summary>
internal sealed class UsageException(string message) : Exception(message);

/// <summary>
/// What the sample programs share about their command lines and settings: options built with System.CommandLine
/// that check their values with the same rules as the settings read from a file or the environment, and the
/// configuration itself (Microsoft.Extensions.Configuration): a JSON file named by <c>--config</c>, then environment
/// variables with the program's prefix, then the command line, each overriding the one before.
/// </summary>
/// <remarks>A command-line option <c>--poll-us</c> is the setting <c>PollUs</c>: <c>"pollUs"</c> in the JSON file,
/// <c>PREFIX_POLLUS</c> in the environment (keys are not case-sensitive; <c>__</c> separates levels, so the
/// socket of a host's first volume is <c>PREFIX_VOLUMES__0__SOCKET</c>). A repeatable option given on the command line
/// replaces the list from the file and the environment.</remarks>
internal sealed class SampleCommandLine
{
    private readonly List<(Option Option, string Key, bool List)> _settings = [];
    private readonly string? _subcommand;

    /// <summary>Starts a program's command line: <c>--config FILE</c> and <c>-h</c>/<c>--help</c> are always there.</summary>
    /// <remarks>With <paramref name="subcommand"/>, the options are that subcommand's (<c>hci-bench contention</c>), and
    /// the arguments parsed are the ones after its name.</remarks>
    /// <param name="program">The program's name, the prefix of its error messages.</param>
    /// <param name="description">What the help says before the options.</param>
    /// <param name="environmentPrefix">The prefix of the environment variables that hold settings.</param>
    /// <param name="subcommand">The subcommand whose options these are, or null for the program's own.</param>
    /// <param name="keyExample">How an option's setting is named, for the help of <c>--config</c>.</param>
    public SampleCommandLine(string program, string description, string environmentPrefix, string? subcommand = null, string keyExample = "\"pollUs\" for --poll-us")
    {
        Program = program;
        EnvironmentPrefix = environmentPrefix;
        _subcommand = subcommand;
        Root = new RootCommand(subcommand == null ? description : "");
        Root.Options.Remove(Root.Options.OfType<VersionOption>().Single());
        Command = Root;
        if (subcommand != null)
        {
            Command = new Command(subcommand, description);
            Root.Subcommands.Add(Command);
        }

        Config = new Option<string>("--config")
        {
            HelpName = "FILE",
            Description = $"JSON settings: one property per option ({keyExample}, a list for a repeatable option). Environment variables {environmentPrefix}NAME override the file, the command line overrides both",
        };
        Command.Options.Add(Config);
    }

    /// <summary>The program's name, the prefix of its error messages.</summary>
    public string Program { get; }

    /// <summary>The prefix of the environment variables that hold settings, e.g. <c>HCI_HOSTTYPE_</c>.</summary>
    public string EnvironmentPrefix { get; }

    /// <summary>The program's root command.</summary>
    public RootCommand Root { get; }

    /// <summary>The command whose options these are: the root, or the subcommand.</summary>
    public Command Command { get; }

    /// <summary><c>--config FILE</c>.</summary>
    public Option<string> Config { get; }

    /// <summary>An option that takes one text value; the setting <paramref name="key"/>. Given more than once, the
    /// last one counts (as in fio and the hand-written parsers before).</summary>
    /// <remarks>With <paramref name="optionalValue"/>, the option may also stand alone (the setting is then "true").</remarks>
    public Option<string[]> Text(string name, string key, string helpName, string description, Func<string, string?>? check = null, bool setting = true, string[]? aliases = null, bool optionalValue = false)
    {
        var option = new Option<string[]>(name, aliases ?? [])
        {
            HelpName = helpName,
            Description = description,
            Arity = optionalValue ? ArgumentArity.ZeroOrMore : ArgumentArity.OneOrMore,
            AllowMultipleArgumentsPerToken = false,
        };
        Validate(option, check);
        Add(option, key, list: false, setting);
        return option;
    }

    /// <summary>An option that may be given more than once, one value each time; the setting <paramref name="key"/> is a list.</summary>
    public Option<string[]> Repeatable(string name, string key, string helpName, string description, Func<string, string?>? check = null, bool setting = true)
    {
        var option = new Option<string[]>(name) { HelpName = helpName, Description = description, Arity = ArgumentArity.OneOrMore, AllowMultipleArgumentsPerToken = false };
        Validate(option, check);
        Add(option, key, list: true, setting);
        return option;
    }

    /// <summary>An on/off option; the setting <paramref name="key"/> is true when it is given.</summary>
    public Option<bool> Flag(string name, string key, string description, string[]? aliases = null, bool setting = true)
    {
        var option = new Option<bool>(name, aliases ?? []) { Description = description, Arity = ArgumentArity.Zero };
        Add(option, key, list: false, setting);
        return option;
    }

    /// <summary>Parses <paramref name="args"/>. Null when the program should exit with <paramref name="exitCode"/>: help was
    /// asked for (0, printed to stdout) or the command line is wrong (2, the errors printed to stderr).</summary>
    public ParseResult? Parse(string[] args, out int exitCode)
    {
        var result = ParseOnly(args);
        exitCode = 0;
        if (PrintHelpIfAsked(result))
        {
            return null;
        }

        var errors = Errors(result);
        if (errors.Count == 0)
        {
            return result;
        }

        foreach (string error in errors)
        {
            Console.Error.WriteLine($"{Program}: {error}");
        }

        exitCode = 2;
        return null;
    }

    /// <summary>Parses <paramref name="args"/> (no @response files: arguments mean what they say).</summary>
    public ParseResult ParseOnly(string[] args) =>
        Root.Parse(_subcommand == null ? args : [_subcommand, .. args], new ParserConfiguration { ResponseFileTokenReplacer = null });

    /// <summary>Prints the help when <paramref name="result"/> asks for it.</summary>
    /// <returns>True when it did.</returns>
    public static bool PrintHelpIfAsked(ParseResult result)
    {
        if (result.Action is not HelpAction help)
        {
            return false;
        }

        help.MaxWidth = 120;
        result.Invoke();
        return true;
    }

    /// <summary>What is wrong with the command line, one sentence each.</summary>
    public static List<string> Errors(ParseResult result)
    {
        var errors = new List<string>();
        foreach (var token in result.UnmatchedTokens)
        {
            int eq = token.IndexOf('=', StringComparison.Ordinal);
            errors.Add(token.StartsWith('-') ? $"unknown option {(eq > 0 ? token[..eq] : token)} (see --help)" : $"unexpected argument '{token}' (see --help)");
        }

        foreach (var error in result.Errors.Where(e => !e.Message.StartsWith("Unrecognized command or argument", StringComparison.Ordinal)))
        {
            errors.Add($"{error.Message.TrimEnd('.')} (see --help)");
        }

        return errors;
    }

    /// <summary>
    /// The settings: the <c>--config</c> file, the environment, then what <paramref name="result"/> gave, plus
    /// <paramref name="extra"/> (settings the program derives from the command line itself, such as a host's volumes).
    /// </summary>
    /// <exception cref="UsageException">The file cannot be read or is not JSON.</exception>
    public ConfigurationManager Configuration(ParseResult result, Func<IConfiguration, IEnumerable<KeyValuePair<string, string?>>>? extra = null)
    {
        var configuration = new ConfigurationManager();
        if (result.GetValue(Config) is { } file)
        {
            try
            {
                configuration.AddJsonFile(Path.GetFullPath(file), optional: false, reloadOnChange: false);
            }
            catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException or FormatException)
            {
                var messages = new List<string>();
                for (Exception? x = e; x != null; x = x.InnerException)
                {
                    messages.Add(x.Message.TrimEnd('.'));
                }

                throw new UsageException($"--config {file}: {string.Join(": ", messages)}");
            }
        }

        configuration.AddEnvironmentVariables(EnvironmentPrefix);
        var commandLine = new Dictionary<string, string?>(StringComparer.OrdinalIgnoreCase);
        foreach (var (option, key, list) in _settings)
        {
            if (result.GetResult(option) is not { Implicit: false } given)
            {
                continue;
            }

            if (option is Option<bool>)
            {
                commandLine[key] = "true";
            }
            else if (list)
            {
                // The command line's list replaces the file's and the environment's: hide their entries, and a single
                // value they gave (HCI_HYBRID_CONTAINERALLOW=uid:1000), which Strings would otherwise take first.
                commandLine[key] = null;
                foreach (var child in configuration.GetSection(key).GetChildren())
                {
                    commandLine[child.Path] = null;
                }

                for (int i = 0; i < given.Tokens.Count; i++)
                {
                    commandLine[$"{key}:{i}"] = given.Tokens[i].Value;
                }
            }
            else
            {
                commandLine[key] = given.Tokens.Count == 0 ? "true" : given.Tokens[^1].Value;
            }
        }

        foreach (var (key, value) in extra?.Invoke(configuration) ?? [])
        {
            commandLine[key] = value;
        }

        configuration.AddInMemoryCollection(commandLine);
        return configuration;
    }

    /// <summary>A list setting's values, in order (a null entry is one the command line replaced).</summary>
    public static List<string> Strings(IConfiguration configuration, string key)
    {
        var section = configuration.GetSection(key);
        if (section.Value is { Length: > 0 } single)
        {
            return [single]; // the environment or a file gave one value, not a list
        }

        return section.GetChildren()
            .Select(c => (Index: int.TryParse(c.Key, NumberStyles.None, CultureInfo.InvariantCulture, out int i) ? i : int.MaxValue, c.Value))
            .Where(c => c.Value != null)
            .OrderBy(c => c.Index)
            .Select(c => c.Value!)
            .ToList();
    }

    /// <summary>Refuses a setting that no option stands for (a misspelled name in the file or the environment).</summary>
    public void RejectUnknown(IConfiguration section, IEnumerable<string> known)
    {
        var names = new HashSet<string>(known, StringComparer.OrdinalIgnoreCase);
        foreach (var child in section.GetChildren())
        {
            if (!names.Contains(child.Key) && (child.Value != null || child.GetChildren().Any()))
            {
                throw new UsageException($"unknown setting '{child.Path}' (from --config or {EnvironmentPrefix}{child.Path.Replace(":", "__", StringComparison.Ordinal).ToUpperInvariant()}): known are {string.Join(", ", names.Order(StringComparer.OrdinalIgnoreCase))}");
            }
        }
    }

    /// <summary>When true, a check's message is the whole error (it names the option itself); otherwise it is prefixed
    /// with the option and the value.</summary>
    public bool WholeMessages { get; set; }

    /// <summary>The setting names of the options added so far.</summary>
    public IEnumerable<string> Keys => _settings.Select(s => s.Key);

    /// <summary>Reads a setting with <paramref name="check"/>; the message names the option.</summary>
    /// <exception cref="UsageException">The value is wrong.</exception>
    public static string? Checked(IConfiguration configuration, string key, string option, Func<string, string?> check)
    {
        string? text = configuration[key];
        if (text != null && check(text) is { } problem)
        {
            // Command-line values were checked as they were parsed: this one is from the file or the environment.
            throw new UsageException($"{option} {text} (setting '{configuration.GetSection(key).Path}' from --config or the environment): {problem}");
        }

        return text;
    }

    /// <summary>A whole number setting from <paramref name="min"/> to <paramref name="max"/>, or <paramref name="otherwise"/>.</summary>
    public static int Int(IConfiguration configuration, string key, string option, int min, int max, int otherwise) =>
        Checked(configuration, key, option, WholeNumber(min, max)) is { } text ? int.Parse(text, NumberStyles.None, CultureInfo.InvariantCulture) : otherwise;

    /// <summary>An on/off setting (true or false), or <paramref name="otherwise"/>.</summary>
    public static bool Bool(IConfiguration configuration, string key, string option, bool otherwise = false) =>
        Checked(configuration, key, option, t => bool.TryParse(t, out _) ? null : "expected true or false") is { } text ? bool.Parse(text) : otherwise;

    /// <summary>A check: a whole number from <paramref name="min"/> to <paramref name="max"/>.</summary>
    public static Func<string, string?> WholeNumber(int min, int max) => text =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int value) && value >= min && value <= max ? null : $"expected a whole number from {min} to {max}";

    /// <summary>A check: one of <paramref name="values"/>.</summary>
    public static Func<string, string?> OneOf(params string[] values) => text =>
        values.Contains(text, StringComparer.Ordinal) ? null : $"not known: use {string.Join(", ", values[..^1])} or {values[^1]}";

    /// <summary>A check: a size (SizeText).</summary>
    public static string? Size(string text) =>
        SizeText.TryParse(text, out _) ? null : "expected a positive size in bytes, optionally with k, m, g or t";

    private void Validate<T>(Option<T> option, Func<string, string?>? check)
    {
        if (check == null)
        {
            return;
        }

        option.Validators.Add(result =>
        {
            foreach (var token in result.Tokens)
            {
                if (check(token.Value) is { } problem)
                {
                    result.AddError(WholeMessages ? problem : $"{option.Name} {token.Value}: {problem}");
                }
            }
        });
    }

    private void Add(Option option, string key, bool list, bool setting)
    {
        Command.Options.Add(option);
        if (setting)
        {
            _settings.Add((option, key, list));
        }
    }
}
