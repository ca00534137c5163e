using Microsoft.Extensions.Logging;

namespace Hci.Samples.Shared;

// The cluster node's scrub events (9040-9049 of the samples' range).
internal static partial class SampleLog
{
    [LoggerMessage(EventId = 9040, Level = LogLevel.Information, Message = "cluster node {Node}: scrubbing volume {Volume} (request {Request})", EventName = "ScrubStarting")]
    public static partial void ScrubStarting(ILogger logger, string node, string volume, string request);

    [LoggerMessage(EventId = 9041, Level = LogLevel.Information, Message = "cluster node {Node}: scrubbed volume {Volume}: {Bad} bad, {Diverging} diverging, {Repaired} repaired, {Unrecoverable} unrecoverable", EventName = "ScrubDone")]
    public static partial void ScrubDone(ILogger logger, string node, string volume, long bad, long diverging, long repaired, long unrecoverable);

    [LoggerMessage(EventId = 9042, Level = LogLevel.Warning, Message = "cluster node {Node}: scrub of volume {Volume} failed: {Message}", EventName = "ScrubFailed")]
    public static partial void ScrubFailed(ILogger logger, string node, string volume, string message);
}
