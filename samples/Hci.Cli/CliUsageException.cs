namespace Hci.Cli;

/// <summary>The command line is wrong; the message says what to fix.</summary>
internal sealed class CliUsageException(string message) : Exception(message);
