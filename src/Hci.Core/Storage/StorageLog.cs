using Microsoft.Extensions.Logging;

namespace Hci.Core.Storage;

/// <summary>
/// What the replica store logs, with fixed event ids in the range 1100-1199 (the ranges of every component:
/// docs/telemetry.md).
/// </summary>
internal static partial class StorageLog
{
    [LoggerMessage(EventId = 1100, Level = LogLevel.Information, Message = "Formatted replica store {StoreId} on '{Device}': {Slots} slots of {ExtentSize} bytes, data from byte {DataOffset}", EventName = "Formatted")]
    public static partial void Formatted(ILogger logger, Guid storeId, string device, long slots, long extentSize, long dataOffset);

    [LoggerMessage(EventId = 1101, Level = LogLevel.Information, Message = "Opened replica store {StoreId} on '{Device}': {Allocated} of {Slots} slots allocated, {Volumes} volumes, {DirtyExtents} extents with regions in the activity log", EventName = "Opened")]
    public static partial void Opened(ILogger logger, Guid storeId, string device, long allocated, long slots, int volumes, int dirtyExtents);

    [LoggerMessage(EventId = 1102, Level = LogLevel.Information, Message = "Replica store {StoreId}: recovery recomputed the checksums of {Blocks} blocks in the activity log whose data was newer than their checksum page (overwrites whose page was not written back yet, or writes torn before they were acknowledged; not corruption)", EventName = "TornBlocksReconciled")]
    public static partial void TornBlocksReconciled(ILogger logger, Guid storeId, long blocks);

    [LoggerMessage(EventId = 1103, Level = LogLevel.Error, Message = "Replica store {StoreId}: checksum mismatch in volume {VolumeId} extent {Extent} block {Block}: the data was not served (read repair rewrites it from another replica)", EventName = "ChecksumMismatch")]
    public static partial void ChecksumMismatch(ILogger logger, Guid storeId, ulong volumeId, long extent, int block);

    [LoggerMessage(EventId = 1104, Level = LogLevel.Warning, Message = "Replica store {StoreId}: metadata page {Page} could not be written: errno {Errno}; the requests that waited for it failed", EventName = "MetadataWriteFailed")]
    public static partial void MetadataWriteFailed(ILogger logger, Guid storeId, int page, int errno);

    [LoggerMessage(EventId = 1105, Level = LogLevel.Information, Message = "Replica store {StoreId}: volume {VolumeId} fenced at epoch {Epoch}", EventName = "Fenced")]
    public static partial void Fenced(ILogger logger, Guid storeId, ulong volumeId, ulong epoch);
}
