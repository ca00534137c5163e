// hci-otel: an Hci host whose meters OpenTelemetry exports.
//
// The host is Hci.Hosting's (devices and vhost-user-blk sockets from the "Hci" section of appsettings.json, the
// environment or the command line); OpenTelemetry.Extensions.Hosting adds a meter provider that listens to every Hci
// meter ("Hci.*": the vhost-user server's requests and notifications, the scheduler's dispatches and throttling, the
// reactors' turns and allocations, the request stages) and exports them every Telemetry:ExportInterval. The console
// exporter stands in for a real back-end: swap AddConsoleExporter for AddOtlpExporter (OpenTelemetry.Exporter.Otlp) or
// the Prometheus exporter and nothing else changes. docs/telemetry.md lists every instrument.
//
//   dotnet run --project samples/Hci.Samples.OpenTelemetry -- --Hci:VhostUserBlk:vol0:SocketPath=/tmp/vol0.sock
//   hci-bench --ioengine=vhost-user --filename=/tmp/vol0.sock --rw=randread --runtime=5s   (in another shell)
using Hci.Hosting;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;

var builder = Host.CreateApplicationBuilder(args);
var interval = builder.Configuration.GetValue("Telemetry:ExportInterval", TimeSpan.FromSeconds(5));
if (interval <= TimeSpan.Zero || interval.TotalMilliseconds > int.MaxValue)
{
    Console.Error.WriteLine($"hci-otel: Telemetry:ExportInterval must be a positive time span such as 00:00:05; got {interval}.");
    return 2;
}

builder.Services.AddHci(builder.Configuration.GetSection("Hci"));
builder.Services.AddOpenTelemetry()
    .ConfigureResource(resource => resource.AddService("hci-otel"))
    .WithMetrics(metrics => metrics
        .AddMeter("Hci.*")
        .AddConsoleExporter((_, reader) => reader.PeriodicExportingMetricReaderOptions.ExportIntervalMilliseconds = (int)interval.TotalMilliseconds));

await builder.Build().RunAsync();
return 0;
