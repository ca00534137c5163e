using Microsoft.Extensions.Logging;

namespace Hci.Cluster;

/// <summary>
/// What the etcd cluster store logs (category <c>Hci.Cluster.EtcdClusterStore</c>), with fixed event ids in the range
/// 3000-3099 (the ranges of every component: docs/telemetry.md).
/// </summary>
internal static partial class EtcdLog
{
    [LoggerMessage(EventId = 3000, Level = LogLevel.Warning, Message = "etcd at {From} failed; switching to {To}", EventName = "SwitchedEndpoint")]
    public static partial void SwitchedEndpoint(ILogger logger, string from, string to);

    [LoggerMessage(EventId = 3001, Level = LogLevel.Warning, Message = "Keepalive of lease {Lease:x} failed, retrying for {Remaining} ms more: {Reason}", EventName = "KeepAliveFailed")]
    public static partial void KeepAliveFailed(ILogger logger, long lease, long remaining, string reason);

    [LoggerMessage(EventId = 3002, Level = LogLevel.Error, Message = "Lease {Lease:x} is lost: {Reason}", EventName = "LeaseLost")]
    public static partial void LeaseLost(ILogger logger, long lease, string reason);

    [LoggerMessage(EventId = 3003, Level = LogLevel.Warning, Message = "Lease {Lease:x} could not be revoked (it lapses by itself within {Ttl} s): {Reason}", EventName = "RevokeFailed")]
    public static partial void RevokeFailed(ILogger logger, long lease, long ttl, string reason);

    [LoggerMessage(EventId = 3004, Level = LogLevel.Warning, Message = "Watch of '{Prefix}' broke after revision {Revision}; resuming: {Reason}", EventName = "WatchResuming")]
    public static partial void WatchResuming(ILogger logger, string prefix, long revision, string reason);
}
