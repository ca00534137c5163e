using Microsoft.Extensions.Logging;

namespace Hci.Core.Replication;

// The scrub's events (1240-1249 of the replicated volumes' range).
internal static partial class ReplicationLog
{
    [LoggerMessage(EventId = 1240, Level = LogLevel.Information, Message = "Volume {Volume}: scrub started over {Extents} allocated extents at up to {Rate} bytes/s", EventName = "ScrubStarted")]
    public static partial void ScrubStarted(ILogger logger, string volume, long extents, long rate);

    [LoggerMessage(EventId = 1241, Level = LogLevel.Information, Message = "Volume {Volume}: scrub finished in {Seconds:F1} s: {Extents} extents, {Bytes} bytes checked; {Bad} bad and {Diverging} diverging block copies found, {Repaired} repaired; {Unrecoverable} blocks unrecoverable; {Skipped} bytes skipped (replicas that did not answer)", EventName = "ScrubFinished")]
    public static partial void ScrubFinished(ILogger logger, string volume, double seconds, long extents, long bytes, long bad, long diverging, long repaired, long unrecoverable, long skipped);

    [LoggerMessage(EventId = 1242, Level = LogLevel.Warning, Message = "Volume {Volume}: scrub found extent {Extent} block at byte {Offset} on {Node}/{Device} {What}; rewrote it from {SourceNode}/{SourceDevice}", EventName = "ScrubRepaired")]
    public static partial void ScrubRepaired(ILogger logger, string volume, long extent, long offset, string node, int device, string what, string sourceNode, int sourceDevice);

    [LoggerMessage(EventId = 1243, Level = LogLevel.Error, Message = "Volume {Volume}: scrub found extent {Extent} block at byte {Offset} with no good majority among its replicas ({Copies}): left as it is; restore the block from a backup, or rewrite it through the volume", EventName = "ScrubUnrecoverable")]
    public static partial void ScrubUnrecoverable(ILogger logger, string volume, long extent, long offset, string copies);

    [LoggerMessage(EventId = 1244, Level = LogLevel.Warning, Message = "Volume {Volume}: scrub could not rewrite extent {Extent} block at byte {Offset} on {Node}/{Device} ({Status}); marking that replica out of sync (resync copies the region to it)", EventName = "ScrubRepairFailed")]
    public static partial void ScrubRepairFailed(ILogger logger, string volume, long extent, long offset, string node, int device, string status);
}
