using Hci.Core.Blocks;
using Hci.Scheduling;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;

namespace Hci.Hosting;

/// <summary>
/// Adds devices, schedulers, vhost-user-blk sockets and iSCSI targets to a host, each under a name, from a
/// configuration section or in code. Devices open in the order they are added, then the sockets start, then the
/// targets; the host stops them in reverse order. Settings are validated when the host starts
/// (<c>ValidateOnStart</c>), with messages that name the configuration key to fix.
/// </summary>
public static class HciBuilderExtensions
{
    /// <summary>Adds a device whose settings are bound from <paramref name="configuration"/>.</summary>
    /// <param name="builder">The builder.</param>
    /// <param name="name">The device's name, which servers refer to.</param>
    /// <param name="configuration">Its section, such as <c>Hci:Devices:disk0</c> (keys of <see cref="HciDeviceOptions"/>).</param>
    /// <returns>The builder.</returns>
    /// <exception cref="ArgumentException">A device of that name is already registered.</exception>
    public static IHciBuilder AddDevice(this IHciBuilder builder, string name, IConfiguration configuration)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        Registry(builder).AddDevice(name, configuration);
        builder.Services.AddOptions<HciDeviceOptions>(name).Bind(configuration).ValidateOnStart();
        return builder;
    }

    /// <summary>Adds a device configured in code.</summary>
    /// <param name="builder">The builder.</param>
    /// <param name="name">The device's name, which servers refer to.</param>
    /// <param name="configure">Sets its <see cref="HciDeviceOptions"/>.</param>
    /// <returns>The builder.</returns>
    /// <exception cref="ArgumentException">A device of that name is already registered.</exception>
    public static IHciBuilder AddDevice(this IHciBuilder builder, string name, Action<HciDeviceOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        Registry(builder).AddDevice(name, null);
        builder.Services.AddOptions<HciDeviceOptions>(name).Configure(configure).ValidateOnStart();
        return builder;
    }

    /// <summary>
    /// Adds a device the application makes, such as a decorated device or a replicated volume. The factory runs when
    /// the host starts, in registration order with the other devices; the host disposes the device when it stops.
    /// </summary>
    /// <param name="builder">The builder.</param>
    /// <param name="name">The device's name, which servers refer to.</param>
    /// <param name="factory">Makes the device.</param>
    /// <returns>The builder.</returns>
    /// <exception cref="ArgumentException">A device of that name is already registered.</exception>
    public static IHciBuilder AddDevice(this IHciBuilder builder, string name, Func<IServiceProvider, BlockDevice> factory)
    {
        ArgumentNullException.ThrowIfNull(factory);
        Registry(builder).AddDevice(name, null, factory);
        return builder;
    }

    /// <summary>
    /// Adds scheduler settings that devices name in <see cref="HciDeviceOptions.Scheduler"/> (keys of
    /// <see cref="SchedulerOptions"/>: <c>Kind</c> fifo, limits, mclock or hybrid, and <c>Limits</c>, <c>MClock</c>,
    /// <c>Hybrid</c>). Each device naming it gets a scheduler of its own with these settings.
    /// </summary>
    /// <param name="builder">The builder.</param>
    /// <param name="name">The name devices refer to.</param>
    /// <param name="configuration">Its section, such as <c>Hci:Schedulers:gold</c>.</param>
    /// <returns>The builder.</returns>
    /// <exception cref="ArgumentException">A scheduler of that name is already registered.</exception>
    public static IHciBuilder AddScheduler(this IHciBuilder builder, string name, IConfiguration configuration)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        Registry(builder).AddScheduler(name, configuration);
        builder.Services.AddOptions<SchedulerOptions>(name).Bind(configuration).ValidateOnStart();
        return builder;
    }

    /// <summary>Adds scheduler settings configured in code (see <see cref="AddScheduler(IHciBuilder, string, IConfiguration)"/>).</summary>
    /// <param name="builder">The builder.</param>
    /// <param name="name">The name devices refer to.</param>
    /// <param name="configure">Sets its <see cref="SchedulerOptions"/>.</param>
    /// <returns>The builder.</returns>
    /// <exception cref="ArgumentException">A scheduler of that name is already registered.</exception>
    public static IHciBuilder AddScheduler(this IHciBuilder builder, string name, Action<SchedulerOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        Registry(builder).AddScheduler(name, null);
        builder.Services.AddOptions<SchedulerOptions>(name).Configure(configure).ValidateOnStart();
        return builder;
    }

    /// <summary>
    /// Adds a vhost-user-blk socket bound from <paramref name="configuration"/>: <c>Device</c> names the device, the
    /// other keys are those of <see cref="Hci.Transport.Vhost.VhostUserBlkServerOptions"/> (<c>SocketPath</c>,
    /// <c>Class</c>, <c>TenantPerConnection</c>, <c>AllowedUsers</c> ...).
    /// </summary>
    /// <param name="builder">The builder.</param>
    /// <param name="name">The socket's name (its default serial).</param>
    /// <param name="configuration">Its section, such as <c>Hci:VhostUserBlk:vol0</c>.</param>
    /// <returns>The builder.</returns>
    /// <exception cref="ArgumentException">A socket of that name is already registered.</exception>
    public static IHciBuilder AddVhostUserBlk(this IHciBuilder builder, string name, IConfiguration configuration)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        Registry(builder).AddVhostUserBlk(name, configuration);
        builder.Services.AddOptions<HciVhostUserBlkOptions>(name)
            .Configure(o =>
            {
                configuration.Bind(o);
                configuration.Bind(o.Server);
            })
            .ValidateOnStart();
        return builder;
    }

    /// <summary>Adds a vhost-user-blk socket configured in code.</summary>
    /// <param name="builder">The builder.</param>
    /// <param name="name">The socket's name (its default serial).</param>
    /// <param name="configure">Sets its <see cref="HciVhostUserBlkOptions"/>.</param>
    /// <returns>The builder.</returns>
    /// <exception cref="ArgumentException">A socket of that name is already registered.</exception>
    public static IHciBuilder AddVhostUserBlk(this IHciBuilder builder, string name, Action<HciVhostUserBlkOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        Registry(builder).AddVhostUserBlk(name, null);
        builder.Services.AddOptions<HciVhostUserBlkOptions>(name).Configure(configure).ValidateOnStart();
        return builder;
    }

    /// <summary>
    /// Adds an iSCSI target bound from <paramref name="configuration"/>: <c>Luns</c> maps LUN numbers to device
    /// names, <c>Insecure</c> allows logins without CHAP, the other keys are those of
    /// <see cref="Hci.Transport.Iscsi.IscsiTargetOptions"/> (<c>Portal</c>, <c>TargetName</c>, <c>ChapUser</c> ...).
    /// </summary>
    /// <param name="builder">The builder.</param>
    /// <param name="name">The target's name in this host (not its IQN).</param>
    /// <param name="configuration">Its section, such as <c>Hci:Iscsi:target0</c>.</param>
    /// <returns>The builder.</returns>
    /// <exception cref="ArgumentException">A target of that name is already registered.</exception>
    public static IHciBuilder AddIscsiTarget(this IHciBuilder builder, string name, IConfiguration configuration)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        Registry(builder).AddIscsi(name, configuration);
        builder.Services.AddOptions<HciIscsiTargetOptions>(name)
            .Configure(o =>
            {
                configuration.Bind(o);
                configuration.Bind(o.Target);
            })
            .ValidateOnStart();
        return builder;
    }

    /// <summary>Adds an iSCSI target configured in code.</summary>
    /// <param name="builder">The builder.</param>
    /// <param name="name">The target's name in this host (not its IQN).</param>
    /// <param name="configure">Sets its <see cref="HciIscsiTargetOptions"/>.</param>
    /// <returns>The builder.</returns>
    /// <exception cref="ArgumentException">A target of that name is already registered.</exception>
    public static IHciBuilder AddIscsiTarget(this IHciBuilder builder, string name, Action<HciIscsiTargetOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        Registry(builder).AddIscsi(name, null);
        builder.Services.AddOptions<HciIscsiTargetOptions>(name).Configure(configure).ValidateOnStart();
        return builder;
    }

    private static HciRegistry Registry(IHciBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        return builder is HciBuilder own
            ? own.Registry
            : HciRegistry.Find(builder.Services) ?? throw new InvalidOperationException("Call services.AddHci() before adding Hci devices and servers.");
    }
}
