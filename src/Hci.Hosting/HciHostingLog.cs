using Microsoft.Extensions.Logging;

namespace Hci.Hosting;

/// <summary>Hci.Hosting's log messages: event ids 5000 to 5099 (docs/telemetry.md).</summary>
internal static partial class HciHostingLog
{
    [LoggerMessage(EventId = 5001, Level = LogLevel.Information, Message = "Hci: device {Device} open ({Engine}, {Capacity} bytes, block {Block}, scheduler {Scheduler}).", EventName = "DeviceOpened")]
    public static partial void DeviceOpened(ILogger logger, string device, string engine, long capacity, int block, string scheduler);

    [LoggerMessage(EventId = 5002, Level = LogLevel.Information, Message = "Hci: vhost-user-blk {Name} ready on {Socket} (device {Device}).", EventName = "VhostReady")]
    public static partial void VhostReady(ILogger logger, string name, string socket, string device);

    [LoggerMessage(EventId = 5003, Level = LogLevel.Information, Message = "Hci: iSCSI target {Name} ({Iqn}) ready on {Portal} with {Luns} LUN(s).", EventName = "IscsiReady")]
    public static partial void IscsiReady(ILogger logger, string name, string iqn, string portal, int luns);

    [LoggerMessage(EventId = 5004, Level = LogLevel.Information, Message = "Hci: ready: {Devices} device(s), {Sockets} vhost-user-blk socket(s), {Targets} iSCSI target(s).", EventName = "Ready")]
    public static partial void Ready(ILogger logger, int devices, int sockets, int targets);

    [LoggerMessage(EventId = 5005, Level = LogLevel.Error, Message = "Hci could not start: {Reason}", EventName = "StartFailed")]
    public static partial void StartFailed(ILogger logger, string reason);

    [LoggerMessage(EventId = 5006, Level = LogLevel.Information, Message = "Hci: stopping: servers first, then devices.", EventName = "Stopping")]
    public static partial void Stopping(ILogger logger);

    [LoggerMessage(EventId = 5007, Level = LogLevel.Information, Message = "Hci: stopped: {Requests} vhost-user-blk requests and {Commands} iSCSI commands served.", EventName = "Stopped")]
    public static partial void Stopped(ILogger logger, long requests, long commands);

    [LoggerMessage(EventId = 5008, Level = LogLevel.Error, Message = "Hci: stopping {What} failed; going on with the rest.", EventName = "StopFailed")]
    public static partial void StopFailed(ILogger logger, Exception exception, string what);
}
