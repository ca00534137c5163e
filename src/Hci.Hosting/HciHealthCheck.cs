using Hci.Core.Blocks;
using Hci.Core.Buffers;
using Hci.Core.Cluster;
using Hci.Core.Replication;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;

namespace Hci.Hosting;

/// <summary>
/// Reports the host's Hci state: Healthy while every device answers and every server listens; Degraded while a
/// replicated volume serves with a replica out of sync; the registration's failure status (Unhealthy by default) with
/// the reasons otherwise, such as a device whose read fails, a fenced volume, a socket file that is gone, or a start
/// that failed.
/// </summary>
internal sealed class HciHealthCheck(HciRuntime runtime, IOptionsMonitor<HciOptions> options) : IHealthCheck
{
    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var state = runtime.State;
        if (state != HciRuntimeState.Running)
        {
            string reason = state == HciRuntimeState.Failed
                ? $"Hci failed to start: {runtime.FailureReason}"
                : $"Hci is {state.ToString().ToLowerInvariant()}, not running.";
            return new HealthCheckResult(context.Registration.FailureStatus, reason);
        }

        var settings = options.CurrentValue;
        var problems = new List<string>();
        var data = new Dictionary<string, object>(StringComparer.Ordinal);
        foreach (var (name, device) in runtime.Devices)
        {
            data[$"device:{name}"] = $"open, {device.Engine}, {device.Geometry.Capacity} bytes";
            if (settings.HealthProbeReads && await ProbeAsync(device, settings.HealthProbeTimeout, cancellationToken).ConfigureAwait(false) is { } failure)
            {
                problems.Add($"device '{name}': {failure}");
                data[$"device:{name}"] = $"failing: {failure}";
            }
        }

        bool degraded = false;
        foreach (var (name, device) in runtime.Devices)
        {
            if (device is not ReplicatedVolume volume)
            {
                continue;
            }

            // A replicated volume (a device made in code: AddDevice(name, factory)): fenced by a newer owner, it serves
            // nothing; an extent with a replica not in sync is degraded (served, with less redundancy) until resync.
            if (volume.IsFenced)
            {
                problems.Add($"volume '{name}': fenced (a newer owner took the volume with a higher epoch); every request fails until it is attached here again.");
                data[$"volume:{name}"] = $"fenced at epoch {volume.Epoch}";
                continue;
            }

            int extents = 0, behind = 0;
            foreach (var extent in volume.GetExtents())
            {
                extents++;
                foreach (var replica in extent.Replicas)
                {
                    if (replica.State != ReplicaState.InSync)
                    {
                        behind++;
                        break;
                    }
                }
            }

            data[$"volume:{name}"] = $"epoch {volume.Epoch}, {extents} extent(s) written, {behind} with a replica not in sync";
            if (behind > 0)
            {
                degraded = true;
                problems.Add($"volume '{name}': {behind} of {extents} written extent(s) have a replica that is not in sync (served from the in-sync ones; resync brings it back).");
            }
        }

        foreach (var (name, server) in runtime.VhostUserBlkServers)
        {
            bool present = File.Exists(server.SocketPath);
            data[$"vhost-user-blk:{name}"] = $"{(present ? "listening" : "socket gone")} on {server.SocketPath}, {server.Connections} connection(s), {server.Requests} request(s)";
            if (!present)
            {
                problems.Add($"vhost-user-blk '{name}': its socket '{server.SocketPath}' is gone, so no front-end can connect; restart the host to create it again.");
            }
        }

        foreach (var (name, target) in runtime.IscsiTargets)
        {
            data[$"iscsi:{name}"] = $"listening on {target.LocalEndPoint}, {target.ConnectionCount} connection(s), {target.CommandsServed} command(s)";
        }

        if (problems.Count > 0 && degraded && problems.TrueForAll(p => p.Contains("not in sync", StringComparison.Ordinal)))
        {
            return HealthCheckResult.Degraded(string.Join("; ", problems), data: data);
        }

        return problems.Count == 0
            ? HealthCheckResult.Healthy($"Hci: {runtime.Devices.Count} device(s), {runtime.VhostUserBlkServers.Count} vhost-user-blk socket(s) and {runtime.IscsiTargets.Count} iSCSI target(s) serving.", data)
            : new HealthCheckResult(context.Registration.FailureStatus, string.Join("; ", problems), data: data);
    }

    /// <summary>Reads the device's first block; null when it answered, else what went wrong.</summary>
    private static async Task<string?> ProbeAsync(BlockDevice device, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var buffer = new AlignedBuffer(device.Geometry.LogicalBlockSize);
        Task read;
        try
        {
            read = device.ReadAsync(0, buffer.Memory).AsTask();
        }
        catch (Exception e)
        {
            ((IDisposable)buffer).Dispose();
            return $"a read of its first block failed: {e.Message}";
        }

        bool outlives = false;
        try
        {
            await read.WaitAsync(timeout, cancellationToken).ConfigureAwait(false);
            return null;
        }
        catch (Exception) when (!read.IsCompleted)
        {
            // Timed out, cancelled, or the wait itself failed: the read is still at the device, so its buffer must
            // outlive it.
            outlives = true;
            _ = read.ContinueWith(static (_, b) => ((IDisposable)b!).Dispose(), buffer, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
            cancellationToken.ThrowIfCancellationRequested();
            return $"a read of its first block did not complete within {timeout.TotalSeconds:0.###} s";
        }
        catch (Exception e)
        {
            return $"a read of its first block failed: {e.Message}";
        }
        finally
        {
            if (!outlives)
            {
                ((IDisposable)buffer).Dispose();
            }
        }
    }
}
