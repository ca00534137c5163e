using System.Text.RegularExpressions;

namespace Hci.Bench.Tests;

/// <summary>samples/Hci.Samples.OpenTelemetry (<c>hci-otel</c>) as a real process: Hci's meters reach OpenTelemetry's
/// exporter with the counts of the I/O a client did.</summary>
public sealed partial class OpenTelemetrySampleTests : IDisposable
{
    private readonly string _dir = Path.Combine("/var/tmp", $"hci-otel-{Guid.NewGuid():N}");

    public OpenTelemetrySampleTests() => Directory.CreateDirectory(_dir);

    public void Dispose()
    {
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (DirectoryNotFoundException)
        {
        }
    }

    [Fact]
    public async Task TheOpenTelemetrySampleExportsTheVhostServersRequestCountAndTheSchedulersDispatches()
    {
        string socket = Path.Combine(_dir, "vol0.sock");
        string dll = SampleProcesses.Built("Hci.Samples.OpenTelemetry", "hci-otel.dll");
        await using var host = SampleHostProcess.Start(
            dll,
            [$"--Hci:VhostUserBlk:vol0:SocketPath={socket}", "--Telemetry:ExportInterval=00:00:00.500"],
            workingDirectory: Path.GetDirectoryName(dll)); // appsettings.json is beside the program

        await host.WaitForLogAsync("Hci: ready:");

        // One pass over at least 8 MiB in 4 KiB writes: at least 2048 requests.
        var options = BenchOptions.Parse(["--ioengine=vhost-user", $"--filename={socket}", "--rw=randwrite", "--iodepth=4", "--size=8m"]);
        var benchOut = new StringWriter();
        var benchLog = new StringWriter();
        Assert.True(BenchRunner.Run(options, benchOut, benchLog) == 0, $"{benchLog}{benchOut}");

        // Cumulative sums: once an export shows every request the client made, the pipeline carried them.
        await host.WaitForAsync(log => Exported(log, "hci.vhost.requests") >= 2048, "hci.vhost.requests >= 2048 in an export");
        await host.WaitForAsync(log => Exported(log, "hci.scheduler.ios") >= 2048, "hci.scheduler.ios >= 2048 in an export");
        Assert.Contains("service.name: hci-otel", host.Log, StringComparison.Ordinal);

        // The largest value any export gave the metric (each export lists it per tag set; the sums are cumulative).
        static long Exported(string text, string metric)
        {
            long best = 0;
            int at = 0;
            while ((at = text.IndexOf($"Metric Name: {metric},", at, StringComparison.Ordinal)) >= 0)
            {
                int end = text.IndexOf("Metric Name:", at + 1, StringComparison.Ordinal);
                string block = end < 0 ? text[at..] : text[at..end];
                foreach (Match m in ValueLine().Matches(block))
                {
                    best = Math.Max(best, long.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture));
                }

                at++;
            }

            return best;
        }
    }

    [GeneratedRegex(@"^Value: (\d+)", RegexOptions.Multiline)]
    private static partial Regex ValueLine();
}
