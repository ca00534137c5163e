using Microsoft.Extensions.Logging;

namespace Hci.Hosting;

/// <summary>Hci.Hosting's log messages: event ids 8000 to 8099.</summary>
internal static partial class HciHostingLog
{
    [LoggerMessage(EventId = 8001, Level = LogLevel.Information, Message = "Hci: device {Device} open ({Engine}, {Capacity} bytes, block {Block}, scheduler {Scheduler}).")]
    public static partial void DeviceOpened(ILogger logger, string device, string engine, long capacity, int block, string scheduler);

    [LoggerMessage(EventId = 8002, Level = LogLevel.Information, Message = "Hci: vhost-user-blk {Name} ready on {Socket} (device {Device}).")]
    public static partial void VhostReady(ILogger logger, string name, string socket, string device);

    [LoggerMessage(EventId = 8003, Level = LogLevel.Information, Message = "Hci: iSCSI target {Name} ({Iqn}) ready on {Portal} with {Luns} LUN(s).")]
    public static partial void IscsiReady(ILogger logger, string name, string iqn, string portal, int luns);

    [LoggerMessage(EventId = 8004, Level = LogLevel.Information, Message = "Hci: ready: {Devices} device(s), {Sockets} vhost-user-blk socket(s), {Targets} iSCSI target(s).")]
    public static partial void Ready(ILogger logger, int devices, int sockets, int targets);

    [LoggerMessage(EventId = 8005, Level = LogLevel.Error, Message = "Hci could not start: {Reason}")]
    public static partial void StartFailed(ILogger logger, string reason);

    [LoggerMessage(EventId = 8006, Level = LogLevel.Information, Message = "Hci: stopping: servers first, then devices.")]
    public static partial void Stopping(ILogger logger);

    [LoggerMessage(EventId = 8007, Level = LogLevel.Information, Message = "Hci: stopped: {Requests} vhost-user-blk requests and {Commands} iSCSI commands served.")]
    public static partial void Stopped(ILogger logger, long requests, long commands);

    [LoggerMessage(EventId = 8008, Level = LogLevel.Error, Message = "Hci: stopping {What} failed; going on with the rest.")]
    public static partial void StopFailed(ILogger logger, Exception exception, string what);
}
