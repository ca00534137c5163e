using Microsoft.Extensions.Logging;

namespace Hci.Core.Devices;

/// <summary>
/// What the device layer logs (category <c>Hci.Core.Devices</c>), with fixed event ids in the range 1000-1099 (the
/// ranges of every component: docs/telemetry.md).
/// </summary>
internal static partial class DevicesLog
{
    [LoggerMessage(EventId = 1000, Level = LogLevel.Warning, Message = "io_uring is unavailable, so devices use the slower portable file engine: {Reason}", EventName = "FallingBackToFileEngine")]
    public static partial void FallingBackToFileEngine(ILogger logger, string reason);
}
