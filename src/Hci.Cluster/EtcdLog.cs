using Microsoft.Extensions.Logging;

namespace Hci.Cluster;

/// <summary>What the etcd cluster store logs, with fixed event ids.</summary>
internal static partial class EtcdLog
{
    [LoggerMessage(1, LogLevel.Warning, "etcd at {From} failed; switching to {To}", EventName = "SwitchedEndpoint")]
    public static partial void SwitchedEndpoint(ILogger logger, string from, string to);

    [LoggerMessage(2, LogLevel.Warning, "Keepalive of lease {Lease:x} failed, retrying for {Remaining} ms more: {Reason}", EventName = "KeepAliveFailed")]
    public static partial void KeepAliveFailed(ILogger logger, long lease, long remaining, string reason);

    [LoggerMessage(3, LogLevel.Error, "Lease {Lease:x} is lost: {Reason}", EventName = "LeaseLost")]
    public static partial void LeaseLost(ILogger logger, long lease, string reason);

    [LoggerMessage(4, LogLevel.Warning, "Lease {Lease:x} could not be revoked (it lapses by itself within {Ttl} s): {Reason}", EventName = "RevokeFailed")]
    public static partial void RevokeFailed(ILogger logger, long lease, long ttl, string reason);

    [LoggerMessage(5, LogLevel.Warning, "Watch of '{Prefix}' broke after revision {Revision}; resuming: {Reason}", EventName = "WatchResuming")]
    public static partial void WatchResuming(ILogger logger, string prefix, long revision, string reason);
}
