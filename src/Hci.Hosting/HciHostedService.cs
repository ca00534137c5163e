using Microsoft.Extensions.Hosting;

namespace Hci.Hosting;

/// <summary>Starts <see cref="HciRuntime"/> with the host and stops it on the host's shutdown.</summary>
internal sealed class HciHostedService(HciRuntime runtime) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken) => runtime.StartAsync(cancellationToken);

    public Task StopAsync(CancellationToken cancellationToken) => runtime.StopAsync();
}
