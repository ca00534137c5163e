using Hci.Scheduling;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace Hci.Hosting;

/// <summary>Registers Hci in a service collection: <c>services.AddHci(configuration.GetSection("Hci"))</c>.</summary>
public static class HciServiceCollectionExtensions
{
    /// <summary>
    /// Registers Hci's hosted service (devices opened at start, servers started after them, everything stopped in
    /// reverse order on the host's shutdown), its <see cref="HciRuntime"/> and the validation of its options at
    /// start. Add devices and servers with the returned builder. Calling it again returns a builder over the same
    /// registrations.
    /// </summary>
    /// <param name="services">The service collection.</param>
    /// <returns>The builder to add devices, schedulers and servers with.</returns>
    public static IHciBuilder AddHci(this IServiceCollection services)
    {
        ArgumentNullException.ThrowIfNull(services);
        var registry = HciRegistry.Find(services);
        if (registry == null)
        {
            registry = new HciRegistry();
            services.AddSingleton(registry);
            services.AddOptions();
            services.AddOptions<HciOptions>().ValidateOnStart();
            services.TryAddSingleton(sp => new HciRuntime(
                sp.GetRequiredService<HciRegistry>(),
                sp,
                sp.GetRequiredService<IOptionsMonitor<HciOptions>>(),
                sp.GetRequiredService<IOptionsMonitor<HciDeviceOptions>>(),
                sp.GetRequiredService<IOptionsMonitor<SchedulerOptions>>(),
                sp.GetRequiredService<IOptionsMonitor<HciVhostUserBlkOptions>>(),
                sp.GetRequiredService<IOptionsMonitor<HciIscsiTargetOptions>>(),
                sp.GetService<ILoggerFactory>() ?? NullLoggerFactory.Instance));
            services.TryAddEnumerable(ServiceDescriptor.Singleton<IHostedService, HciHostedService>());
            services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<HciOptions>, HciOptionsValidation>());
            services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<HciDeviceOptions>, HciOptionsValidation>());
            services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<SchedulerOptions>, HciOptionsValidation>());
            services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<HciVhostUserBlkOptions>, HciOptionsValidation>());
            services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<HciIscsiTargetOptions>, HciOptionsValidation>());
        }

        return new HciBuilder(services, registry);
    }

    /// <summary>Registers Hci (see <see cref="AddHci(IServiceCollection)"/>) and configures its host-wide settings.</summary>
    /// <param name="services">The service collection.</param>
    /// <param name="configure">Sets <see cref="HciOptions"/>.</param>
    /// <returns>The builder to add devices, schedulers and servers with.</returns>
    public static IHciBuilder AddHci(this IServiceCollection services, Action<HciOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        var builder = services.AddHci();
        services.Configure(configure);
        return builder;
    }

    /// <summary>
    /// Registers Hci (see <see cref="AddHci(IServiceCollection)"/>) with everything <paramref name="configuration"/>
    /// describes: its own keys are <see cref="HciOptions"/>; each child of <c>Devices</c> is a device
    /// (<see cref="HciDeviceOptions"/>), of <c>Schedulers</c> a scheduler (<see cref="SchedulerOptions"/>), of
    /// <c>VhostUserBlk</c> a socket (<see cref="HciVhostUserBlkOptions"/>) and of <c>Iscsi</c> a target
    /// (<see cref="HciIscsiTargetOptions"/>), each named by its key. The set of devices and servers is read now;
    /// their settings are read when the host starts.
    /// </summary>
    /// <param name="services">The service collection.</param>
    /// <param name="configuration">The <c>Hci</c> section, such as <c>builder.Configuration.GetSection("Hci")</c>.</param>
    /// <returns>The builder, to add more in code.</returns>
    public static IHciBuilder AddHci(this IServiceCollection services, IConfiguration configuration)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        var builder = services.AddHci();
        var registry = HciRegistry.Find(services)!;
        if (configuration is IConfigurationSection section)
        {
            registry.RootPath = section.Path;
        }

        registry.RootConfiguration = configuration;

        services.AddOptions<HciOptions>().Bind(configuration);
        foreach (var child in configuration.GetSection("Schedulers").GetChildren())
        {
            builder.AddScheduler(child.Key, child);
        }

        foreach (var child in configuration.GetSection("Devices").GetChildren())
        {
            builder.AddDevice(child.Key, child);
        }

        foreach (var child in configuration.GetSection("VhostUserBlk").GetChildren())
        {
            builder.AddVhostUserBlk(child.Key, child);
        }

        foreach (var child in configuration.GetSection("Iscsi").GetChildren())
        {
            builder.AddIscsiTarget(child.Key, child);
        }

        return builder;
    }
}
