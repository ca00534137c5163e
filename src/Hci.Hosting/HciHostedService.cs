using Microsoft.Extensions.Hosting;

namespace Hci.Hosting;

/// <summary>
/// Starts <see cref="HciRuntime"/> with the host and stops it on the host's shutdown; a host disposed without being
/// stopped still closes the sockets and devices when its service provider disposes this.
/// </summary>
internal sealed class HciHostedService(HciRuntime runtime) : IHostedService, IAsyncDisposable
{
    public Task StartAsync(CancellationToken cancellationToken) => runtime.StartAsync(cancellationToken);

    public Task StopAsync(CancellationToken cancellationToken) => runtime.StopAsync();

    public ValueTask DisposeAsync() => new(runtime.StopAsync());
}
