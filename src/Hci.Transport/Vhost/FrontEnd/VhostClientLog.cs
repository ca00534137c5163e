using Microsoft.Extensions.Logging;

namespace Hci.Transport.Vhost;

/// <summary>
/// What the vhost-user-blk front end (<see cref="VhostUserBlkClient"/>) logs, with fixed event ids in the range
/// 2300-2399 (the ranges of every component: docs/telemetry.md).
/// </summary>
internal static partial class VhostClientLog
{
    [LoggerMessage(EventId = 2300, Level = LogLevel.Warning, Message = "vhost-user client {Name}: the back-end sent an unrequested message; ignoring a byte of it.", EventName = "UnrequestedMessage")]
    public static partial void UnrequestedMessage(ILogger logger, string name);

    [LoggerMessage(EventId = 2301, Level = LogLevel.Warning, Message = "vhost-user client {Name}: the back-end went away.", EventName = "BackEndGone")]
    public static partial void BackEndGone(ILogger logger, string name);

    [LoggerMessage(EventId = 2302, Level = LogLevel.Error, Message = "vhost-user client {Name}: could not reconnect; requests in flight fail with ENOTCONN.", EventName = "ReconnectFailed")]
    public static partial void ReconnectFailed(ILogger logger, string name);

    [LoggerMessage(EventId = 2303, Level = LogLevel.Information, Message = "vhost-user client {Name}: reconnected after {Elapsed:F1} s.", EventName = "Reconnected")]
    public static partial void Reconnected(ILogger logger, string name, double elapsed);

    [LoggerMessage(EventId = 2304, Level = LogLevel.Debug, Message = "vhost-user client {Name}: reconnect attempt failed: {Message}", EventName = "ReconnectAttemptFailed")]
    public static partial void ReconnectAttemptFailed(ILogger logger, string name, string message);
}
