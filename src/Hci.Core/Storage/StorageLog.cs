using Microsoft.Extensions.Logging;

namespace Hci.Core.Storage;

/// <summary>The replica store's log messages, with fixed event ids (6000-6099).</summary>
internal static partial class StorageLog
{
    [LoggerMessage(EventId = 6000, Level = LogLevel.Information, Message = "Formatted replica store {StoreId} on '{Device}': {Slots} slots of {ExtentSize} bytes, data from byte {DataOffset}")]
    public static partial void Formatted(ILogger logger, Guid storeId, string device, long slots, long extentSize, long dataOffset);

    [LoggerMessage(EventId = 6001, Level = LogLevel.Information, Message = "Opened replica store {StoreId} on '{Device}': {Allocated} of {Slots} slots allocated, {Volumes} volumes, {DirtyExtents} extents with regions in the activity log")]
    public static partial void Opened(ILogger logger, Guid storeId, string device, long allocated, long slots, int volumes, int dirtyExtents);

    [LoggerMessage(EventId = 6002, Level = LogLevel.Information, Message = "Replica store {StoreId}: recovery recomputed the checksums of {Blocks} blocks in the activity log whose data was newer than their checksum page (overwrites whose page was not written back yet, or writes torn before they were acknowledged; not corruption)")]
    public static partial void TornBlocksReconciled(ILogger logger, Guid storeId, long blocks);

    [LoggerMessage(EventId = 6003, Level = LogLevel.Error, Message = "Replica store {StoreId}: checksum mismatch in volume {VolumeId} extent {Extent} block {Block}: the data was not served (read repair rewrites it from another replica)")]
    public static partial void ChecksumMismatch(ILogger logger, Guid storeId, ulong volumeId, long extent, int block);

    [LoggerMessage(EventId = 6004, Level = LogLevel.Warning, Message = "Replica store {StoreId}: metadata page {Page} could not be written: errno {Errno}; the requests that waited for it failed")]
    public static partial void MetadataWriteFailed(ILogger logger, Guid storeId, int page, int errno);

    [LoggerMessage(EventId = 6005, Level = LogLevel.Information, Message = "Replica store {StoreId}: volume {VolumeId} fenced at epoch {Epoch}")]
    public static partial void Fenced(ILogger logger, Guid storeId, ulong volumeId, ulong epoch);
}
