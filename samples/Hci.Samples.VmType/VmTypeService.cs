using Hci.Core.Blocks;
using Hci.Core.Devices;
using Hci.Samples.Shared;
using Hci.Scheduling;
using Hci.Transport.Iscsi;
using Hci.Transport.Scsi;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Hci.Samples.VmType;

/// <summary>hci-vmtype's serving, as a hosted service: <see cref="StartAsync"/> opens the device, starts the iSCSI
/// target (or joins the cluster) and logs the ready line; <see cref="StopAsync"/> closes the target, which accounts
/// its commands, and logs the exit summary.</summary>
internal sealed class VmTypeService(VmTypeOptions options, ConsoleLogger logger) : IHostedService, IAsyncDisposable
{
    private BlockDevice? _device;
    private IscsiTarget? _target;
    private ClusterNode? _node;
    private long _allocatedAtReady;

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        try
        {
            await StartTargetAsync(cancellationToken);
        }
        catch
        {
            await DisposeAsync();
            throw;
        }

        _allocatedAtReady = GC.GetTotalAllocatedBytes(precise: true);
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_target is not { } target)
        {
            return;
        }

        await target.DisposeAsync(); // closes every connection, which accounts its commands
        if (_node != null)
        {
            await _node.DisposeAsync(); // detaches its volumes (the target no longer uses them)
            _node = null;
        }

        long allocated = GC.GetTotalAllocatedBytes(precise: true) - _allocatedAtReady;
        foreach (string line in Hci.Core.Blocks.RequestStages.Snapshot().Format("hci-vmtype: stages: "))
        {
            SampleLog.Stages(logger, line);
        }

        long commands = target.CommandsServed;
        SampleLog.VmTypeStopping(logger, commands,
            allocated,
            commands == 0 ? 0 : (double)allocated / commands);
        _target = null;
        await DisposeAsync();
    }

    public async ValueTask DisposeAsync()
    {
        if (_target != null)
        {
            await _target.DisposeAsync();
            _target = null;
        }

        if (_node != null)
        {
            await _node.DisposeAsync();
            _node = null;
        }

        _device?.Dispose();
        _device = null;
    }

    private async Task StartTargetAsync(CancellationToken cancellationToken)
    {
        string iqn = options.Iqn;
        var cluster = options.Cluster;
        _device = cluster.Enabled ? null : BlockDevices.Open(new BlockDeviceOptions { Engine = options.Engine, Path = options.Backing, Size = options.Size, Direct = !options.Buffered }, logger);
        if (_device != null && options.SchedulerKind is { } kind)
        {
            _device = new ScheduledBlockDevice(_device, new SchedulerOptions { Kind = kind });
        }

        string? chapSecret = Secret("--chap-secret", options.ChapSecretOnCommandLine, "--chap-secret-file", options.ChapSecretFile, "HCI_CHAP_SECRET");
        string? mutualSecret = Secret("--mutual-chap-secret", options.MutualChapSecretOnCommandLine, "--mutual-chap-secret-file", options.MutualChapSecretFile, "HCI_MUTUAL_CHAP_SECRET");
        var luns = _device == null ? new Dictionary<int, ScsiDisk>() : new Dictionary<int, ScsiDisk> { [options.Lun] = new ScsiDisk(_device, Path.GetFileName(options.Backing ?? iqn)) };
        var target = new IscsiTarget(
            new IscsiTargetOptions
            {
                Portal = options.Portal,
                TargetName = iqn,
                ChapUser = options.ChapUser,
                ChapSecret = chapSecret,
                MutualChapUser = options.MutualChapUser,
                MutualChapSecret = mutualSecret,
                AllowedInitiators = options.AllowedInitiators,
                PollWindow = options.PollWindow,
            },
            luns,
            logger);
        _target = target;
        target.Start();
        if (cluster.Enabled)
        {
            var lunOf = new Dictionary<string, int>(StringComparer.Ordinal); // a volume keeps its LUN across detach and attach
            _node = new ClusterNode(cluster, logger)
            {
                VolumeAttached = volume =>
                {
                    int volumeLun;
                    lock (lunOf)
                    {
                        if (!lunOf.TryGetValue(volume.Name, out volumeLun))
                        {
                            volumeLun = lunOf.Count + 1;
                            if (volumeLun > 16383)
                            {
                                throw new IOException($"volume {volume.Name}: the target has no LUN left (16383 are in use)");
                            }

                            lunOf.Add(volume.Name, volumeLun);
                        }
                    }

                    target.AddLun(volumeLun, new ScsiDisk(volume, volume.Name));
                    SampleLog.VmTypeVolumeReady(logger, volumeLun, iqn, volume.Name, volume.Geometry.Capacity);
                    return Task.CompletedTask;
                },
                VolumeDetaching = volume =>
                {
                    int volumeLun;
                    lock (lunOf)
                    {
                        if (!lunOf.TryGetValue(volume.Name, out volumeLun))
                        {
                            return Task.CompletedTask;
                        }
                    }

                    target.RemoveLun(volumeLun);
                    SampleLog.VmTypeLunRemoved(logger, volumeLun, volume.Name);
                    return Task.CompletedTask;
                },
            };
            await _node.StartAsync(cancellationToken);
            SampleLog.VmTypeClusterReady(logger, cluster.NodeId, iqn, target.LocalEndPoint);
        }
        else
        {
            SampleLog.VmTypeReady(logger, iqn, target.LocalEndPoint, options.Lun, options.Backing ?? options.Engine.ToString(), _device!.Geometry.Capacity, _device.Geometry.LogicalBlockSize, options.Scheduler);
        }
    }

    // A secret from its file (first line), else the environment, else the command line (warned: any user can read it).
    private string? Secret(string flag, string? onCommandLine, string fileFlag, string? file, string variable)
    {
        if (file != null)
        {
            try
            {
                return File.ReadLines(file).FirstOrDefault()?.TrimEnd('\r') ?? throw new ArgumentException($"{fileFlag} {file} is empty");
            }
            catch (FileNotFoundException)
            {
                throw new ArgumentException($"{fileFlag} {file}: no such file");
            }
        }

        if (Environment.GetEnvironmentVariable(variable) is { Length: > 0 } fromEnvironment)
        {
            return fromEnvironment;
        }

        if (onCommandLine != null)
        {
            SampleLog.SecretOnCommandLine(logger, flag, fileFlag, variable);
            return onCommandLine;
        }

        return null;
    }
}
