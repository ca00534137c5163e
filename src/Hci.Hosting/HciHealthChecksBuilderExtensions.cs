using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;

namespace Hci.Hosting;

/// <summary>Adds Hci's health check: <c>services.AddHealthChecks().AddHci()</c>.</summary>
public static class HciHealthChecksBuilderExtensions
{
    /// <summary>
    /// Adds a check of the host's Hci devices and servers: Healthy while every device answers a read of its first
    /// block (<see cref="HciOptions.HealthProbeReads"/>) and every vhost-user-blk socket file is in place;
    /// <paramref name="failureStatus"/> with the reasons otherwise, and before start, after stop, or when start failed.
    /// Its data lists each device, socket and target with its state and counters.
    /// </summary>
    /// <param name="builder">The health checks builder.</param>
    /// <param name="name">The check's name. <remarks>Default: <c>hci</c>.</remarks></param>
    /// <param name="failureStatus">What a failure reports. <remarks>Default: Unhealthy.</remarks></param>
    /// <param name="tags">Tags to filter checks by, such as <c>ready</c>.</param>
    /// <returns>The builder.</returns>
    public static IHealthChecksBuilder AddHci(this IHealthChecksBuilder builder, string name = "hci", HealthStatus? failureStatus = null, IEnumerable<string>? tags = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        return builder.Add(new HealthCheckRegistration(
            name,
            sp => new HciHealthCheck(
                sp.GetService<HciRuntime>() ?? throw new InvalidOperationException("The Hci health check needs services.AddHci(...) first."),
                sp.GetRequiredService<IOptionsMonitor<HciOptions>>()),
            failureStatus,
            tags));
    }
}
