using Microsoft.Extensions.Logging;

namespace Hci.Core.Replication;

/// <summary>
/// What replicated volumes log (category <c>Hci.Core.Replication.ReplicatedVolume</c>), with fixed event ids in the
/// range 1200-1299 (the ranges of every component: docs/telemetry.md).
/// </summary>
internal static partial class ReplicationLog
{
    [LoggerMessage(EventId = 1200, Level = LogLevel.Warning, Message = "Volume {Volume}: extent {Extent} replica on {Node}/{Device} failed a write ({Status}); marking it out of sync", EventName = "ReplicaWriteFailed")]
    public static partial void ReplicaWriteFailed(ILogger logger, string volume, long extent, string node, int device, string status);

    [LoggerMessage(EventId = 1201, Level = LogLevel.Warning, Message = "Volume {Volume}: replica on {Node}/{Device} failed a flush ({Status}); marking its extents out of sync", EventName = "ReplicaFlushFailed")]
    public static partial void ReplicaFlushFailed(ILogger logger, string volume, string node, int device, string status);

    [LoggerMessage(EventId = 1202, Level = LogLevel.Error, Message = "Volume {Volume}: extent {Extent} has {InSync} in-sync replicas, fewer than the minimum {Min}: writes fail with EIO until replicas come back (logged once)", EventName = "TooFewInSync")]
    public static partial void TooFewInSync(ILogger logger, string volume, long extent, int inSync, int min);

    [LoggerMessage(EventId = 1203, Level = LogLevel.Error, Message = "Volume {Volume}: a replica has seen epoch {Observed}, newer than ours ({Epoch}): another node owns the volume now; every request fails with EIO (detach it here)", EventName = "Fenced")]
    public static partial void Fenced(ILogger logger, string volume, ulong epoch, ulong observed);

    [LoggerMessage(EventId = 1204, Level = LogLevel.Warning, Message = "Volume {Volume}: extent {Extent} replica on {Node}/{Device} failed its checksum; reading another replica and repairing this one", EventName = "ChecksumMismatch")]
    public static partial void ChecksumMismatch(ILogger logger, string volume, long extent, string node, int device);

    [LoggerMessage(EventId = 1205, Level = LogLevel.Information, Message = "Volume {Volume}: extent {Extent} replica on {Node}/{Device} is now {State}", EventName = "ReplicaState")]
    public static partial void ReplicaState(ILogger logger, string volume, long extent, string node, int device, string state);

    [LoggerMessage(EventId = 1206, Level = LogLevel.Warning, Message = "Volume {Volume}: cluster store operation failed: {Reason}", EventName = "ControlFailed")]
    public static partial void ControlFailed(ILogger logger, string volume, string reason);

    [LoggerMessage(EventId = 1207, Level = LogLevel.Warning, Message = "Volume {Volume}: extent {Extent} could not be allocated: {Reason}; writes to it fail until it can", EventName = "AllocationFailed")]
    public static partial void AllocationFailed(ILogger logger, string volume, long extent, string reason);

    [LoggerMessage(EventId = 1208, Level = LogLevel.Error, Message = "Volume {Volume}: extent {Extent} has no in-sync replica that answered a read", EventName = "NoReplicaToRead")]
    public static partial void NoReplicaToRead(ILogger logger, string volume, long extent);

    [LoggerMessage(EventId = 1209, Level = LogLevel.Information, Message = "Volume {Volume}: resynced extent {Extent} to {Node}/{Device}: {Regions} regions, {Bytes} bytes", EventName = "Resynced")]
    public static partial void Resynced(ILogger logger, string volume, long extent, string node, int device, int regions, long bytes);

    [LoggerMessage(EventId = 1210, Level = LogLevel.Information, Message = "Volume {Volume}: attached at epoch {Epoch}; reconciled {Regions} regions ({Bytes} bytes) left in flight by the previous owner", EventName = "Attached")]
    public static partial void Attached(ILogger logger, string volume, ulong epoch, long regions, long bytes);

    [LoggerMessage(EventId = 1211, Level = LogLevel.Information, Message = "Volume {Volume}: repaired extent {Extent} bytes {Offset}+{Length} on {Node}/{Device} from a good replica", EventName = "Repaired")]
    public static partial void Repaired(ILogger logger, string volume, long extent, long offset, int length, string node, int device);

    [LoggerMessage(EventId = 1212, Level = LogLevel.Warning, Message = "Volume {Volume}: replica on {Node}/{Device} is unreachable at attach: its extents are marked out of sync", EventName = "UnreachableAtAttach")]
    public static partial void UnreachableAtAttach(ILogger logger, string volume, string node, int device);

    [LoggerMessage(EventId = 1213, Level = LogLevel.Error, Message = "Volume {Volume}: ownership at epoch {Epoch} revoked ({Reason}); every request fails with EIO from now on", EventName = "Revoked")]
    public static partial void Revoked(ILogger logger, string volume, ulong epoch, string reason);
}

/// <summary>A volume's logger with the messages that are logged once.</summary>
internal sealed class VolumeLog(ILogger logger)
{
    private int _tooFew;
    private int _noReplica;

    public ILogger Logger => logger;

    public void ReplicaWriteFailed(string volume, long extent, string node, int device, string status) => ReplicationLog.ReplicaWriteFailed(logger, volume, extent, node, device, status);

    public void ReplicaFlushFailed(string volume, string node, int device, string status) => ReplicationLog.ReplicaFlushFailed(logger, volume, node, device, status);

    public void TooFewInSync(string volume, long extent, int inSync, int min)
    {
        if (Interlocked.Exchange(ref _tooFew, 1) == 0)
        {
            ReplicationLog.TooFewInSync(logger, volume, extent, inSync, min);
        }
    }

    public void Fenced(string volume, ulong epoch, ulong observed) => ReplicationLog.Fenced(logger, volume, epoch, observed);

    public void Revoked(string volume, ulong epoch, string reason) => ReplicationLog.Revoked(logger, volume, epoch, reason);

    public void ChecksumMismatch(string volume, long extent, string node, int device) => ReplicationLog.ChecksumMismatch(logger, volume, extent, node, device);

    public void ReplicaState(string volume, long extent, string node, int device, string state) => ReplicationLog.ReplicaState(logger, volume, extent, node, device, state);

    public void ControlFailed(string volume, string reason) => ReplicationLog.ControlFailed(logger, volume, reason);

    public void AllocationFailed(string volume, long extent, string reason) => ReplicationLog.AllocationFailed(logger, volume, extent, reason);

    public void NoReplicaToRead(string volume, long extent)
    {
        if (Interlocked.Exchange(ref _noReplica, 1) == 0)
        {
            ReplicationLog.NoReplicaToRead(logger, volume, extent);
        }
    }
}
