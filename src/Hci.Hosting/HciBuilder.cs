using Microsoft.Extensions.DependencyInjection;

namespace Hci.Hosting;

/// <summary>The builder over a service collection and its registry of names.</summary>
internal sealed class HciBuilder(IServiceCollection services, HciRegistry registry) : IHciBuilder
{
    public IServiceCollection Services { get; } = services;

    public HciRegistry Registry { get; } = registry;
}
