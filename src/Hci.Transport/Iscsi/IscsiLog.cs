using System.Net;
using Microsoft.Extensions.Logging;

namespace Hci.Transport.Iscsi;

/// <summary>
/// What the iSCSI target logs (<see cref="IscsiTarget"/> and its connections), with fixed event ids in the range
/// 2100-2199 (the ranges of every component: docs/telemetry.md).
/// </summary>
internal static partial class IscsiLog
{
    [LoggerMessage(EventId = 2100, Level = LogLevel.Information, Message = "iSCSI target {Target}: portal listening on {Endpoint} ({Luns} LUN(s)).", EventName = "Listening")]
    public static partial void Listening(ILogger logger, string target, IPEndPoint endpoint, int luns);

    [LoggerMessage(EventId = 2101, Level = LogLevel.Information, Message = "iSCSI target {Target}: LUN {Lun} added.", EventName = "LunAdded")]
    public static partial void LunAdded(ILogger logger, string target, int lun);

    [LoggerMessage(EventId = 2102, Level = LogLevel.Information, Message = "iSCSI target {Target}: LUN {Lun} removed.", EventName = "LunRemoved")]
    public static partial void LunRemoved(ILogger logger, string target, int lun);

    [LoggerMessage(EventId = 2103, Level = LogLevel.Information, Message = "iSCSI: a new login for {Port} reinstates its session: the old one is closed.", EventName = "SessionReinstated")]
    public static partial void SessionReinstated(ILogger logger, string port);

    [LoggerMessage(EventId = 2104, Level = LogLevel.Warning, Message = "iSCSI target: {Count} connections are logging in; dropping the oldest to take {Peer}.", EventName = "PendingLoginDropped")]
    public static partial void PendingLoginDropped(ILogger logger, int count, EndPoint? peer);

    [LoggerMessage(EventId = 2110, Level = LogLevel.Information, Message = "iSCSI connection from {Peer}: no login within {Seconds} s; dropping it.", EventName = "LoginTimedOut")]
    public static partial void LoginTimedOut(ILogger logger, string peer, double seconds);

    [LoggerMessage(EventId = 2111, Level = LogLevel.Warning, Message = "iSCSI connection from {Peer} ({Initiator}): {Reason}; dropping it.", EventName = "ProtocolError")]
    public static partial void ProtocolError(ILogger logger, string peer, string initiator, string reason);

    [LoggerMessage(EventId = 2112, Level = LogLevel.Error, Message = "iSCSI connection from {Peer} failed; dropping it.", EventName = "LoginConnectionFailed")]
    public static partial void LoginConnectionFailed(ILogger logger, Exception exception, string peer);

    [LoggerMessage(EventId = 2113, Level = LogLevel.Information, Message = "iSCSI login from {Peer} refused: {Why}.", EventName = "LoginRefused")]
    public static partial void LoginRefused(ILogger logger, string peer, string why);

    [LoggerMessage(EventId = 2114, Level = LogLevel.Debug, Message = "iSCSI login from {Peer}, stage {Stage}: {Keys}", EventName = "LoginKeys")]
    public static partial void LoginKeys(ILogger logger, string peer, int stage, string keys);

    [LoggerMessage(EventId = 2115, Level = LogLevel.Information, Message = "iSCSI {Kind} session for {Initiator} from {Peer} (header digest {Header}, data digest {Data}).", EventName = "LoggedIn")]
    public static partial void LoggedIn(ILogger logger, string kind, string initiator, string peer, bool header, bool data);

    [LoggerMessage(EventId = 2120, Level = LogLevel.Debug, Message = "iSCSI connection from {Initiator}: {Reason}; closing it.", EventName = "ConnectionClosing")]
    public static partial void ConnectionClosing(ILogger logger, string initiator, string reason);

    [LoggerMessage(EventId = 2121, Level = LogLevel.Error, Message = "iSCSI connection from {Peer} ({Initiator}) failed; dropping it.", EventName = "ConnectionFailed")]
    public static partial void ConnectionFailed(ILogger logger, Exception exception, string peer, string initiator);

    [LoggerMessage(EventId = 2122, Level = LogLevel.Error, Message = "iSCSI connection from {Initiator}: closing it failed.", EventName = "CloseFailed")]
    public static partial void CloseFailed(ILogger logger, Exception exception, string initiator);

    [LoggerMessage(EventId = 2123, Level = LogLevel.Error, Message = "SCSI command {Opcode:x2} failed.", EventName = "CommandFailed")]
    public static partial void CommandFailed(ILogger logger, Exception exception, byte opcode);

    [LoggerMessage(EventId = 2124, Level = LogLevel.Error, Message = "iSCSI connection from {Initiator}: {Requests} requests still running after {Seconds} s; their buffers are left to them.", EventName = "DrainTimedOut")]
    public static partial void DrainTimedOut(ILogger logger, string initiator, int requests, double seconds);

    [LoggerMessage(EventId = 2125, Level = LogLevel.Error, Message = "iSCSI connection from {Initiator}: releasing its resources failed.", EventName = "ReleaseFailed")]
    public static partial void ReleaseFailed(ILogger logger, Exception exception, string initiator);

    [LoggerMessage(EventId = 2126, Level = LogLevel.Debug, Message = "iSCSI connection from {Initiator} closed: {Commands} commands.", EventName = "ConnectionClosed")]
    public static partial void ConnectionClosed(ILogger logger, string initiator, long commands);

    [LoggerMessage(EventId = 2130, Level = LogLevel.Warning, Message = "iSCSI {Initiator}: Data-Out DataSN {DataSn} at offset {Offset} for task {Itt:x}, expected {Expected} at {Received}; the command fails (later ones on this connection are logged at Debug as DataOutOutOfOrderAgain).", EventName = "DataOutOutOfOrder")]
    public static partial void DataOutOutOfOrder(ILogger logger, string initiator, uint dataSn, uint offset, uint itt, uint expected, int received);

    [LoggerMessage(EventId = 2131, Level = LogLevel.Debug, Message = "iSCSI {Initiator}: Data-Out DataSN {DataSn} at offset {Offset} for task {Itt:x}, expected {Expected} at {Received}; the command fails.", EventName = "DataOutOutOfOrderAgain")]
    public static partial void DataOutOutOfOrderAgain(ILogger logger, string initiator, uint dataSn, uint offset, uint itt, uint expected, int received);
}
