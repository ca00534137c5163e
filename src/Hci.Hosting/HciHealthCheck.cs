using Hci.Core.Blocks;
using Hci.Core.Buffers;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;

namespace Hci.Hosting;

/// <summary>
/// Reports the host's Hci state: Healthy while every device answers and every server listens; the registration's
/// failure status (Unhealthy by default) with the reasons otherwise, such as a device whose read fails, a socket
/// file that is gone, or a start that failed.
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
        catch (Exception e) when (e is TimeoutException or OperationCanceledException && !read.IsCompleted)
        {
            // The read is still at the device: its buffer must outlive it.
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
