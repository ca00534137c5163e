using Microsoft.Extensions.Logging;

namespace Hci.Samples.Shared;

// What a cluster node logs about rebuilds (event ids 9040-9049 of the cluster node's range).
internal static partial class SampleLog
{
    [LoggerMessage(EventId = 9050, Level = LogLevel.Warning, Message = "cluster node {Node}: node {Down} is down since {Since:O}; its replicas are rebuilt elsewhere if it is not back by {RebuildAt:O}", EventName = "NodeDown")]
    public static partial void NodeDown(ILogger logger, string node, string down, DateTimeOffset since, DateTimeOffset rebuildAt);

    [LoggerMessage(EventId = 9051, Level = LogLevel.Information, Message = "cluster node {Node}: {Reason} of volume {Volume}: moving {Extents} extent replicas ({Bytes} bytes) off node(s) {Lost}, {Parallel} at a time", EventName = "RebuildStarted")]
    public static partial void RebuildStarted(ILogger logger, string node, string reason, string volume, int extents, long bytes, string lost, int parallel);

    [LoggerMessage(EventId = 9052, Level = LogLevel.Information, Message = "cluster node {Node}: {Reason} of volume {Volume} done: {Done} extent replicas moved, {Failed} failed (tried again), {Bytes} bytes in {Seconds:F1} s, {MBps:F1} MB/s", EventName = "RebuildFinished")]
    public static partial void RebuildFinished(ILogger logger, string node, string reason, string volume, long done, long failed, long bytes, double seconds, double mbps);

    [LoggerMessage(EventId = 9053, Level = LogLevel.Error, Message = "cluster node {Node}: volume {Volume}: {Extents} extent replicas on lost nodes have no live failure domain to go to; add nodes (they stay degraded until then)", EventName = "RebuildUnplaceable")]
    public static partial void RebuildUnplaceable(ILogger logger, string node, string volume, long extents);
}
