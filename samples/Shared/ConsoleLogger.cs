using Microsoft.Extensions.Logging;

namespace Hci.Samples.Shared;

/// <summary>A minimal stderr logger: a timestamp, the level and the message, one line each.</summary>
internal sealed class ConsoleLogger(LogLevel minimum) : ILogger, ILoggerFactory
{
    private static readonly Lock s_lock = new();

    public IDisposable? BeginScope<TState>(TState state)
        where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => logLevel >= minimum;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        if (!IsEnabled(logLevel))
        {
            return;
        }

        string level = logLevel switch
        {
            LogLevel.Critical => "crit",
            LogLevel.Error => "fail",
            LogLevel.Warning => "warn",
            LogLevel.Information => "info",
            _ => "dbug",
        };
        string line = $"{DateTime.UtcNow:HH:mm:ss.fff} {level} {formatter(state, exception)}{(exception == null ? "" : " " + exception)}";
        lock (s_lock)
        {
            Console.Error.WriteLine(line);
        }
    }

    public ILogger CreateLogger(string categoryName) => this;

    public void AddProvider(ILoggerProvider provider)
    {
    }

    public void Dispose()
    {
    }
}
