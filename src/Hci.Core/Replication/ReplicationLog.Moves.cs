using Microsoft.Extensions.Logging;

namespace Hci.Core.Replication;

// What replica moves (rebuild, rebalance) log: event ids 1230-1239 of the replication range.
internal static partial class ReplicationLog
{
    [LoggerMessage(EventId = 1230, Level = LogLevel.Information, Message = "Volume {Volume}: extent {Extent} moves from {FromNode}/{FromDevice} to {ToNode}/{ToDevice}: the new replica joined out of sync and is being copied", EventName = "MoveStarted")]
    public static partial void MoveStarted(ILogger logger, string volume, long extent, string fromNode, int fromDevice, string toNode, int toDevice);

    [LoggerMessage(EventId = 1231, Level = LogLevel.Information, Message = "Volume {Volume}: extent {Extent} moved from {FromNode}/{FromDevice} to {ToNode}/{ToDevice} ({Bytes} bytes); the old replica left the record", EventName = "Moved")]
    public static partial void Moved(ILogger logger, string volume, long extent, string fromNode, int fromDevice, string toNode, int toDevice, long bytes);

    [LoggerMessage(EventId = 1232, Level = LogLevel.Warning, Message = "Volume {Volume}: moving extent {Extent} to {ToNode}/{ToDevice} failed: {Reason}; the new replica is taken out again and the old one stays", EventName = "MoveFailed")]
    public static partial void MoveFailed(ILogger logger, string volume, long extent, string toNode, int toDevice, string reason);

    [LoggerMessage(EventId = 1233, Level = LogLevel.Debug, Message = "Volume {Volume}: freeing extent {Extent} on {Node}/{Device} after it left the record: {Status}", EventName = "SlotDropped")]
    public static partial void SlotDropped(ILogger logger, string volume, long extent, string node, int device, string status);

    [LoggerMessage(EventId = 1234, Level = LogLevel.Information, Message = "Volume {Volume}: freed {Slots} slots on {Node}/{Device} that no replica set of it includes any more (left by moves while that store was away)", EventName = "OrphanSlotsDropped")]
    public static partial void OrphansDropped(ILogger logger, string volume, string node, int device, int slots);
}
