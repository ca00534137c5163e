using Microsoft.Extensions.Logging;

namespace Hci.Transport.Replication;

/// <summary>
/// What the node-to-node replica protocol logs (server and client), with fixed event ids in the range 2200-2299 (the
/// ranges of every component: docs/telemetry.md).
/// </summary>
internal static partial class ReplicaProtocolLog
{
    [LoggerMessage(EventId = 2201, Level = LogLevel.Information, Message = "Replica server of node {Node}: listening on {Endpoint} (TLS {Tls}).", EventName = "Listening")]
    public static partial void Listening(ILogger logger, string node, string endpoint, bool tls);

    [LoggerMessage(EventId = 2202, Level = LogLevel.Warning, Message = "Replica server: {Count} connections already; refusing {Peer}.", EventName = "TooManyConnections")]
    public static partial void TooManyConnections(ILogger logger, int count, string peer);

    [LoggerMessage(EventId = 2203, Level = LogLevel.Warning, Message = "Replica server: connection from {Peer} refused during the handshake: {Reason}.", EventName = "HandshakeRefused")]
    public static partial void HandshakeRefused(ILogger logger, string peer, string reason);

    [LoggerMessage(EventId = 2204, Level = LogLevel.Information, Message = "Replica server: node {Client} connected from {Peer}.", EventName = "Accepted")]
    public static partial void Accepted(ILogger logger, string client, string peer);

    [LoggerMessage(EventId = 2205, Level = LogLevel.Warning, Message = "Replica server: node {Client} sent a malformed frame ({Error}); dropping its connection.", EventName = "MalformedFrame")]
    public static partial void MalformedFrame(ILogger logger, string client, ReplicaFrameError error);

    [LoggerMessage(EventId = 2206, Level = LogLevel.Debug, Message = "Replica server: connection of node {Client} closed ({Reason}); {Requests} requests served.", EventName = "ConnectionClosed")]
    public static partial void ConnectionClosed(ILogger logger, string client, string reason, long requests);

    [LoggerMessage(EventId = 2207, Level = LogLevel.Warning, Message = "Replica server: a write from node {Client} arrived with a bad payload checksum (volume {Volume}, extent {Extent}); answered BadPayload.", EventName = "BadPayload")]
    public static partial void BadPayload(ILogger logger, string client, ulong volume, long extent);

    [LoggerMessage(EventId = 2208, Level = LogLevel.Error, Message = "Replica server: connection of node {Client} failed; dropping it.", EventName = "ConnectionFailed")]
    public static partial void ConnectionFailed(ILogger logger, Exception exception, string client);

    [LoggerMessage(EventId = 2209, Level = LogLevel.Warning, Message = "Replica server: node {Client} did not read its answers for {Seconds} s; dropping its connection.", EventName = "SendStalled")]
    public static partial void SendStalled(ILogger logger, string client, double seconds);

    [LoggerMessage(EventId = 2220, Level = LogLevel.Information, Message = "Replica channel to node {Node}: connected to {Address}.", EventName = "Connected")]
    public static partial void Connected(ILogger logger, string node, string address);

    [LoggerMessage(EventId = 2221, Level = LogLevel.Warning, Message = "Replica channel to node {Node}: cannot connect ({Reason}); next attempt in {Milliseconds} ms.", EventName = "ConnectFailed")]
    public static partial void ConnectFailed(ILogger logger, string node, string reason, long milliseconds);

    [LoggerMessage(EventId = 2222, Level = LogLevel.Warning, Message = "Replica channel to node {Node}: connection lost ({Reason}); {InFlight} requests answered Unavailable.", EventName = "ConnectionLost")]
    public static partial void ConnectionLost(ILogger logger, string node, string reason, int inFlight);

    [LoggerMessage(EventId = 2223, Level = LogLevel.Warning, Message = "Replica channel to node {Node}: a read's payload failed its checksum (volume {Volume}, extent {Extent}); answered BadPayload.", EventName = "ReadBadPayload")]
    public static partial void ReadBadPayload(ILogger logger, string node, ulong volume, long extent);

    [LoggerMessage(EventId = 2224, Level = LogLevel.Debug, Message = "Replica connection with {Peer}: handed to the reactor; {Count} other epoll sets of the process watched it and dropped it (0 where .NET's socket engine did not watch it, or /proc/self/fdinfo could not be read: then its thread wakes on every frame).", EventName = "SocketDetached")]
    public static partial void SocketDetached(ILogger logger, string peer, int count);
}
