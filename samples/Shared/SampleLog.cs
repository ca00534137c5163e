using System.Net;
using Hci.Core.Blocks;
using Microsoft.Extensions.Logging;

namespace Hci.Samples.Shared;

/// <summary>
/// What the sample hosts log themselves (the SDK's components log their own events), with fixed event ids in the
/// samples' range 9000-9999 (the ranges of every component: docs/telemetry.md): 9000 shared, 9020 the cluster node,
/// 9100 hci-hosttype, 9200 hci-vmtype, 9300 hci-hybrid.
/// </summary>
internal static partial class SampleLog
{
    [LoggerMessage(EventId = 9000, Level = LogLevel.Error, Message = "{Host}: {Message}", EventName = "HostFailed")]
    public static partial void HostFailed(ILogger logger, string host, string message);

    [LoggerMessage(EventId = 9001, Level = LogLevel.Information, Message = "{Line}", EventName = "Stages")]
    public static partial void Stages(ILogger logger, string line);

    [LoggerMessage(EventId = 9020, Level = LogLevel.Information, Message = "cluster node {Node}: ready: {Devices} device(s), {Slots} extents of room, {Where}", EventName = "NodeReady")]
    public static partial void NodeReady(ILogger logger, string node, int devices, long slots, string where);

    [LoggerMessage(EventId = 9021, Level = LogLevel.Error, Message = "cluster node {Node}: membership lease lost (the cluster store was unreachable too long); re-registering", EventName = "MembershipLost")]
    public static partial void MembershipLost(ILogger logger, string node);

    [LoggerMessage(EventId = 9022, Level = LogLevel.Warning, Message = "cluster node {Node}: {Message}", EventName = "NodeSyncFailed")]
    public static partial void NodeSyncFailed(ILogger logger, string node, string message);

    [LoggerMessage(EventId = 9023, Level = LogLevel.Information, Message = "cluster node {Node}: attached volume {Volume} ({Size} bytes, {Replicas} replicas, epoch {Epoch}; reconciled {Regions} regions)", EventName = "VolumeAttached")]
    public static partial void VolumeAttached(ILogger logger, string node, string volume, long size, int replicas, ulong epoch, long regions);

    [LoggerMessage(EventId = 9024, Level = LogLevel.Error, Message = "cluster node {Node}: cannot attach volume {Volume}: {Message}", EventName = "AttachFailed")]
    public static partial void AttachFailed(ILogger logger, string node, string volume, string message);

    [LoggerMessage(EventId = 9025, Level = LogLevel.Warning, Message = "cluster node {Node}: detaching volume {Volume}: {Message}", EventName = "DetachFailed")]
    public static partial void DetachFailed(ILogger logger, string node, string volume, string message);

    [LoggerMessage(EventId = 9026, Level = LogLevel.Information, Message = "cluster node {Node}: detached volume {Volume}", EventName = "VolumeDetached")]
    public static partial void VolumeDetached(ILogger logger, string node, string volume);

    [LoggerMessage(EventId = 9100, Level = LogLevel.Information, Message = "hci-hosttype: ready: {Socket} serves {Backing} ({Size} bytes, block {Block}, engine {Engine}, scheduler {Scheduler})", EventName = "HostTypeReady")]
    public static partial void HostTypeReady(ILogger logger, string socket, string backing, long size, int block, string engine, string scheduler);

    [LoggerMessage(EventId = 9101, Level = LogLevel.Information, Message = "hci-hosttype: ready: {Socket} serves replicated volume {Volume} ({Size} bytes)", EventName = "HostTypeVolumeReady")]
    public static partial void HostTypeVolumeReady(ILogger logger, string socket, string volume, long size);

    [LoggerMessage(EventId = 9102, Level = LogLevel.Information, Message = "hci-hosttype: ready: cluster node {Node}, sockets in {Dir}", EventName = "HostTypeClusterReady")]
    public static partial void HostTypeClusterReady(ILogger logger, string node, string? dir);

    [LoggerMessage(EventId = 9103, Level = LogLevel.Information, Message = "hci-hosttype: stopping: {Requests} requests served, {Kicks} kicks, {Interrupts} interrupts, {Allocated} bytes allocated since ready ({PerRequest:F3} per request, connection set-up included)", EventName = "HostTypeStopping")]
    public static partial void HostTypeStopping(ILogger logger, long requests, long kicks, long interrupts, long allocated, double perRequest);

    [LoggerMessage(EventId = 9200, Level = LogLevel.Information, Message = "hci-vmtype: ready: LUN {Lun} of {Iqn} serves replicated volume {Volume} ({Size} bytes)", EventName = "VmTypeVolumeReady")]
    public static partial void VmTypeVolumeReady(ILogger logger, int lun, string iqn, string volume, long size);

    [LoggerMessage(EventId = 9201, Level = LogLevel.Information, Message = "hci-vmtype: LUN {Lun} (volume {Volume}) removed", EventName = "VmTypeLunRemoved")]
    public static partial void VmTypeLunRemoved(ILogger logger, int lun, string volume);

    [LoggerMessage(EventId = 9202, Level = LogLevel.Information, Message = "hci-vmtype: ready: cluster node {Node}, target {Iqn} on {Portal}", EventName = "VmTypeClusterReady")]
    public static partial void VmTypeClusterReady(ILogger logger, string node, string iqn, IPEndPoint portal);

    [LoggerMessage(EventId = 9203, Level = LogLevel.Information, Message = "hci-vmtype: ready: {Iqn} on {Portal}, LUN {Lun} = {Backing} ({Size} bytes, block {Block}, scheduler {Scheduler})", EventName = "VmTypeReady")]
    public static partial void VmTypeReady(ILogger logger, string iqn, IPEndPoint portal, int lun, string backing, long size, int block, string scheduler);

    [LoggerMessage(EventId = 9204, Level = LogLevel.Information, Message = "hci-vmtype: stopping: {Commands} commands served, {Allocated} bytes allocated since ready ({PerCommand:F3} per command, connection set-up included; the reactors' own count is the hci.reactor.allocated_bytes instrument)", EventName = "VmTypeStopping")]
    public static partial void VmTypeStopping(ILogger logger, long commands, long allocated, double perCommand);

    [LoggerMessage(EventId = 9205, Level = LogLevel.Warning, Message = "hci-vmtype: {Flag} puts the secret on the command line, where every user of this machine can read it; use {FileFlag} or {Variable}", EventName = "SecretOnCommandLine")]
    public static partial void SecretOnCommandLine(ILogger logger, string flag, string fileFlag, string variable);

    [LoggerMessage(EventId = 9300, Level = LogLevel.Information, Message = "hci-hybrid: ready: {Vm} and {Container} serve replicated volume {Volume} ({Size} bytes)", EventName = "HybridVolumeReady")]
    public static partial void HybridVolumeReady(ILogger logger, string vm, string container, string volume, long size);

    [LoggerMessage(EventId = 9301, Level = LogLevel.Information, Message = "hci-hybrid: volume {Volume} detached: its sockets are closed", EventName = "HybridVolumeDetached")]
    public static partial void HybridVolumeDetached(ILogger logger, string volume);

    [LoggerMessage(EventId = 9302, Level = LogLevel.Information, Message = "hci-hybrid: ready: cluster node {Node}, sockets in {Dir} (NAME.vm.sock, NAME.ct.sock), scheduler {Scheduler}", EventName = "HybridClusterReady")]
    public static partial void HybridClusterReady(ILogger logger, string node, string? dir, string scheduler);

    [LoggerMessage(EventId = 9303, Level = LogLevel.Information, Message = "hci-hybrid: ready: {Vms} VM socket(s), {Containers} container socket(s) serve {Backing} ({Size} bytes, engine {Engine}, scheduler {Scheduler}, {Reactors} reactor(s))", EventName = "HybridReady")]
    public static partial void HybridReady(ILogger logger, int vms, int containers, string backing, long size, string engine, string scheduler, int reactors);

    [LoggerMessage(EventId = 9304, Level = LogLevel.Information, Message = "hci-hybrid: stopping: {Class}: {Requests} requests, {Bytes} bytes, waited in the scheduler {Queued:F1} us on average, throttled {Throttled:F1} ms in all, released in {Batches} batch(es)", EventName = "HybridClassStopping")]
    public static partial void HybridClassStopping(ILogger logger, IoClass @class, long requests, long bytes, double queued, double throttled, long batches);

    [LoggerMessage(EventId = 9305, Level = LogLevel.Information, Message = "hci-hybrid: stopping: {Requests} requests served, {Kicks} kicks, {Interrupts} interrupts", EventName = "HybridStopping")]
    public static partial void HybridStopping(ILogger logger, long requests, long kicks, long interrupts);

    [LoggerMessage(EventId = 9306, Level = LogLevel.Information, Message = "hci-hybrid: {Class} socket {Socket} admits {Who}", EventName = "HybridSocketAdmits")]
    public static partial void HybridSocketAdmits(ILogger logger, IoClass @class, string socket, string who);
}
