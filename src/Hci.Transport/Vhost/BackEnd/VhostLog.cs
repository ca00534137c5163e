using Hci.Core.Blocks;
using Microsoft.Extensions.Logging;

namespace Hci.Transport.Vhost;

/// <summary>
/// What the vhost-user-blk back end logs (<see cref="VhostUserBlkServer"/>, its sessions and reactors), with fixed
/// event ids in the range 2000-2099 (the ranges of every component: docs/telemetry.md).
/// </summary>
internal static partial class VhostLog
{
    [LoggerMessage(EventId = 2000, Level = LogLevel.Information, Message = "vhost-user-blk: listening on {Socket} ({Device}, {Capacity} bytes, {Queues} queue(s), {Reactors} reactor(s)).", EventName = "Listening")]
    public static partial void Listening(ILogger logger, string socket, string device, long capacity, int queues, int reactors);

    [LoggerMessage(EventId = 2001, Level = LogLevel.Error, Message = "vhost-user-blk: accept on {Socket} failed: {Error}; retrying.", EventName = "AcceptFailed")]
    public static partial void AcceptFailed(ILogger logger, string socket, string error);

    [LoggerMessage(EventId = 2002, Level = LogLevel.Warning, Message = "vhost-user-blk: {Socket} refused a connection from pid {Pid} uid {Uid} gid {Gid}: not in its allowed users or groups.", EventName = "PeerRefused")]
    public static partial void PeerRefused(ILogger logger, string socket, int pid, uint uid, uint gid);

    [LoggerMessage(EventId = 2003, Level = LogLevel.Warning, Message = "vhost-user-blk: {Socket} already has {Count} front-end(s) (MaxConnections); closing a new connection.", EventName = "TooManyConnections")]
    public static partial void TooManyConnections(ILogger logger, string socket, int count);

    [LoggerMessage(EventId = 2004, Level = LogLevel.Information, Message = "vhost-user-blk: front-end connected to {Socket} (session {Id}, pid {Pid} uid {Uid}, class {Class}, tenant {Tenant}).", EventName = "Connected")]
    public static partial void Connected(ILogger logger, string socket, int id, int pid, uint uid, IoClass @class, int tenant);

    [LoggerMessage(EventId = 2010, Level = LogLevel.Information, Message = "vhost-user session {Id} on {Socket}: front-end disconnected.", EventName = "Disconnected")]
    public static partial void Disconnected(ILogger logger, int id, string socket);

    [LoggerMessage(EventId = 2011, Level = LogLevel.Warning, Message = "vhost-user session {Id}: closing after a malformed message ({Error}, request {Request}).", EventName = "MalformedMessage")]
    public static partial void MalformedMessage(ILogger logger, int id, VhostUserError error, VhostUserRequest request);

    [LoggerMessage(EventId = 2012, Level = LogLevel.Error, Message = "vhost-user session {Id}: failed; closing it.", EventName = "SessionFailed")]
    public static partial void SessionFailed(ILogger logger, Exception exception, int id);

    [LoggerMessage(EventId = 2013, Level = LogLevel.Debug, Message = "vhost-user session {Id}: request {Request} is not supported.", EventName = "UnsupportedRequest")]
    public static partial void UnsupportedRequest(ILogger logger, int id, VhostUserRequest request);

    [LoggerMessage(EventId = 2014, Level = LogLevel.Warning, Message = "vhost-user session {Id}: GET_VRING_BASE for a queue that does not exist; closing.", EventName = "GetVringBaseNoQueue")]
    public static partial void GetVringBaseNoQueue(ILogger logger, int id);

    [LoggerMessage(EventId = 2015, Level = LogLevel.Warning, Message = "vhost-user session {Id}: malformed GET_CONFIG; closing.", EventName = "MalformedGetConfig")]
    public static partial void MalformedGetConfig(ILogger logger, int id);

    [LoggerMessage(EventId = 2016, Level = LogLevel.Debug, Message = "vhost-user session {Id}: refused {Request}.", EventName = "RequestRefused")]
    public static partial void RequestRefused(ILogger logger, int id, VhostUserRequest request);

    [LoggerMessage(EventId = 2017, Level = LogLevel.Warning, Message = "vhost-user session {Id}: queue {Index}'s rings are not inside guest memory; it stays stopped.", EventName = "RingsOutsideMemory")]
    public static partial void RingsOutsideMemory(ILogger logger, int id, int index);

    [LoggerMessage(EventId = 2018, Level = LogLevel.Error, Message = "vhost-user session {Id}: queue {Index} cannot start: {Reason}", EventName = "QueueCannotStart")]
    public static partial void QueueCannotStart(ILogger logger, int id, int index, string reason);

    [LoggerMessage(EventId = 2030, Level = LogLevel.Warning, Message = "vhost-user session {Id}: memory table refused: {Reason}", EventName = "MemoryTableRefused")]
    public static partial void MemoryTableRefused(ILogger logger, int id, string reason);

    [LoggerMessage(EventId = 2031, Level = LogLevel.Warning, Message = "vhost-user session {Id}: malformed GET_INFLIGHT_FD; closing.", EventName = "MalformedGetInflightFd")]
    public static partial void MalformedGetInflightFd(ILogger logger, int id);

    [LoggerMessage(EventId = 2032, Level = LogLevel.Warning, Message = "vhost-user session {Id}: GET_INFLIGHT_FD while rings run; refused (answered with no area).", EventName = "GetInflightFdWhileRunning")]
    public static partial void GetInflightFdWhileRunning(ILogger logger, int id);

    [LoggerMessage(EventId = 2033, Level = LogLevel.Warning, Message = "vhost-user session {Id}: could not make the in-flight area: {Error}.", EventName = "InflightAreaFailed")]
    public static partial void InflightAreaFailed(ILogger logger, int id, string error);

    [LoggerMessage(EventId = 2034, Level = LogLevel.Warning, Message = "vhost-user session {Id}: SET_INFLIGHT_FD while rings run; refused.", EventName = "SetInflightFdWhileRunning")]
    public static partial void SetInflightFdWhileRunning(ILogger logger, int id);

    [LoggerMessage(EventId = 2035, Level = LogLevel.Information, Message = "vhost-user session {Id}: queue {Index} resumes {Count} request(s) a previous back-end left in flight.", EventName = "InflightResumed")]
    public static partial void InflightResumed(ILogger logger, int id, int index, int count);

    [LoggerMessage(EventId = 2036, Level = LogLevel.Warning, Message = "vhost-user session {Id}: {What} ends at {End} but its file has {Size} bytes; refused.", EventName = "SharedFileTooShort")]
    public static partial void SharedFileTooShort(ILogger logger, int id, string what, ulong end, long size);

    [LoggerMessage(EventId = 2037, Level = LogLevel.Warning, Message = "vhost-user session {Id}: {What} is in a file that cannot be sealed against shrinking (a front-end could truncate it and kill this process); refused. Share memory through a sealed memfd, or set AllowUnsealedMemory for trusted front-ends.", EventName = "SharedFileUnsealed")]
    public static partial void SharedFileUnsealed(ILogger logger, int id, string what);

    [LoggerMessage(EventId = 2038, Level = LogLevel.Warning, Message = "vhost-user session {Id}: mapping {What} failed: {Error}.", EventName = "MapFailed")]
    public static partial void MapFailed(ILogger logger, int id, string what, string error);

    [LoggerMessage(EventId = 2050, Level = LogLevel.Error, Message = "vhost-user {Ring}: handling a request failed unexpectedly; it was answered with an I/O error.", EventName = "RequestFailed")]
    public static partial void RequestFailed(ILogger logger, Exception exception, string ring);

    [LoggerMessage(EventId = 2051, Level = LogLevel.Warning, Message = "Could not watch the kick eventfd of {Ring}: {Error}; polling it instead.", EventName = "KickNotWatched")]
    public static partial void KickNotWatched(ILogger logger, string ring, string error);

    [LoggerMessage(EventId = 2052, Level = LogLevel.Critical, Message = "vhost-user {Ring}: serving the ring failed unexpectedly; it stops where it had read to.", EventName = "RingFailed")]
    public static partial void RingFailed(ILogger logger, Exception exception, string ring);
}
