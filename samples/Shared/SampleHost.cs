using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Hci.Samples.Shared;

/// <summary>
/// Runs a sample host's serving logic on the generic host (Microsoft.Extensions.Hosting): the service starts (and logs
/// its ready lines) before the host counts as started, so a systemd unit of <c>Type=notify</c> gets <c>READY=1</c>
/// once it serves (<c>AddSystemd</c>); SIGINT and SIGTERM stop the host, which stops the service (its exit summary)
/// and exits 0.
/// </summary>
internal static class SampleHost
{
    /// <summary>Runs <typeparamref name="TService"/> until SIGINT or SIGTERM: 0, or 1 when it fails to start
    /// (the error logged as <c>PROGRAM: message</c>).</summary>
    public static int Run<TService>(string program, ConfigurationManager configuration, bool verbose, Action<IServiceCollection> services)
        where TService : class, IHostedService
    {
        var level = verbose ? LogLevel.Debug : LogLevel.Information;
        var logger = new ConsoleLogger(level);
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings
        {
            DisableDefaults = true, // the settings are the program's own: --config, its environment prefix, its command line
            Configuration = configuration,
            ApplicationName = program,
            ContentRootPath = Environment.CurrentDirectory,
        });
        builder.Logging.ClearProviders();
        builder.Logging.AddProvider(new ConsoleLoggerProvider(logger));
        builder.Logging.SetMinimumLevel(level);
        builder.Logging.AddFilter("Microsoft", verbose ? LogLevel.Debug : LogLevel.None); // the host's own lines
        builder.Services.Configure<ConsoleLifetimeOptions>(o => o.SuppressStatusMessages = true);
        builder.Services.AddSystemd();
        builder.Services.AddSingleton(logger);
        services(builder.Services);
        builder.Services.AddHostedService<TService>();
        using var host = builder.Build();
        try
        {
            host.Run();
            return 0;
        }
        catch (Exception e) when (e is ArgumentException or IOException or UnauthorizedAccessException or PlatformNotSupportedException
            or InvalidDataException or Hci.Core.Cluster.ClusterStoreException or Hci.Core.Cluster.ClusterCatalogException)
        {
            SampleLog.HostFailed(logger, program, e.Message);
            return 1;
        }
    }

    private sealed class ConsoleLoggerProvider(ConsoleLogger logger) : ILoggerProvider
    {
        public ILogger CreateLogger(string categoryName) => logger;

        public void Dispose()
        {
        }
    }
}
