using Microsoft.Extensions.Logging;

namespace Hci.Transport.Replication;

/// <summary>The node-to-node protocol's log messages (server and client), with fixed event ids 7001-7099.</summary>
internal static partial class ReplicaProtocolLog
{
    [LoggerMessage(EventId = 7001, Level = LogLevel.Information, Message = "Replica server of node {Node}: listening on {Endpoint} (TLS {Tls}).")]
    public static partial void Listening(ILogger logger, string node, string endpoint, bool tls);

    [LoggerMessage(EventId = 7002, Level = LogLevel.Warning, Message = "Replica server: {Count} connections already; refusing {Peer}.")]
    public static partial void TooManyConnections(ILogger logger, int count, string peer);

    [LoggerMessage(EventId = 7003, Level = LogLevel.Warning, Message = "Replica server: connection from {Peer} refused during the handshake: {Reason}.")]
    public static partial void HandshakeRefused(ILogger logger, string peer, string reason);

    [LoggerMessage(EventId = 7004, Level = LogLevel.Information, Message = "Replica server: node {Client} connected from {Peer}.")]
    public static partial void Accepted(ILogger logger, string client, string peer);

    [LoggerMessage(EventId = 7005, Level = LogLevel.Warning, Message = "Replica server: node {Client} sent a malformed frame ({Error}); dropping its connection.")]
    public static partial void MalformedFrame(ILogger logger, string client, ReplicaFrameError error);

    [LoggerMessage(EventId = 7006, Level = LogLevel.Debug, Message = "Replica server: connection of node {Client} closed ({Reason}); {Requests} requests served.")]
    public static partial void ConnectionClosed(ILogger logger, string client, string reason, long requests);

    [LoggerMessage(EventId = 7007, Level = LogLevel.Warning, Message = "Replica server: a write from node {Client} arrived with a bad payload checksum (volume {Volume}, extent {Extent}); answered BadPayload.")]
    public static partial void BadPayload(ILogger logger, string client, ulong volume, long extent);

    [LoggerMessage(EventId = 7008, Level = LogLevel.Error, Message = "Replica server: connection of node {Client} failed; dropping it.")]
    public static partial void ConnectionFailed(ILogger logger, Exception exception, string client);

    [LoggerMessage(EventId = 7009, Level = LogLevel.Warning, Message = "Replica server: node {Client} did not read its answers for {Seconds} s; dropping its connection.")]
    public static partial void SendStalled(ILogger logger, string client, double seconds);

    [LoggerMessage(EventId = 7020, Level = LogLevel.Information, Message = "Replica channel to node {Node}: connected to {Address}.")]
    public static partial void Connected(ILogger logger, string node, string address);

    [LoggerMessage(EventId = 7021, Level = LogLevel.Warning, Message = "Replica channel to node {Node}: cannot connect ({Reason}); next attempt in {Milliseconds} ms.")]
    public static partial void ConnectFailed(ILogger logger, string node, string reason, long milliseconds);

    [LoggerMessage(EventId = 7022, Level = LogLevel.Warning, Message = "Replica channel to node {Node}: connection lost ({Reason}); {InFlight} requests answered Unavailable.")]
    public static partial void ConnectionLost(ILogger logger, string node, string reason, int inFlight);

    [LoggerMessage(EventId = 7023, Level = LogLevel.Warning, Message = "Replica channel to node {Node}: a read's payload failed its checksum (volume {Volume}, extent {Extent}); answered BadPayload.")]
    public static partial void ReadBadPayload(ILogger logger, string node, ulong volume, long extent);
}
