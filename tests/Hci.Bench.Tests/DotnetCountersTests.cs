using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using Hci.Core.Buffers;
using Hci.Transport.Vhost;
using Xunit.Abstractions;

namespace Hci.Bench.Tests;

/// <summary>
/// dotnet-counters (the .NET diagnostics tool, a local tool of this repository: .config/dotnet-tools.json) reads the
/// SDK's meters from a running hci-hosttype while a vhost-user client does I/O through it, as an operator would.
/// </summary>
public sealed class DotnetCountersTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(90);
    private static readonly string[] Meters = ["Hci.Transport.VhostUser", "Hci.Scheduling", "Hci.Core.Reactor", "Hci.Core.Stages"];

    // Instruments that I/O must move (a counter's rate, a latency gauge), and those that need only be there: the
    // reactor's allocation rate is 0 in steady state by design, a FIFO scheduler queues nothing, and a reactor that
    // keeps finding work does not sleep.
    private static readonly string[] Moving =
    [
        "hci.vhost.requests", "hci.vhost.kicks", "hci.vhost.interrupts", "hci.scheduler.ios", "hci.scheduler.bytes",
        "hci.request.stage.count", "hci.request.stage.mean", "hci.request.stage.p99", "hci.reactor.turns",
    ];

    private static readonly string[] Present = ["hci.scheduler.queued", "hci.request.stage.p50", "hci.reactor.allocated_bytes", "hci.reactor.sleeps"];

    [Fact]
    public async Task DotnetCountersReadsTheMetersOfARunningHostWithTheValuesItsIoMoves()
    {
        string root = RepositoryRoot();
        var (toolCode, toolText) = await RunAsync(root, "dotnet", ["tool", "run", "dotnet-counters", "--", "--version"]);
        if (toolCode != 0)
        {
            // A fresh clone has not restored its local tools: do it here, as `dotnet test` restores the packages, so
            // that the README's test command stays the one command it is.
            var (restoreCode, restoreText) = await RunAsync(root, "dotnet", ["tool", "restore"]);
            Assert.True(restoreCode == 0, $"`dotnet tool restore` failed in the repository root (it installs the local tools that .config/dotnet-tools.json names): {restoreText}");
            (toolCode, toolText) = await RunAsync(root, "dotnet", ["tool", "run", "dotnet-counters", "--", "--version"]);
        }

        Assert.True(
            toolCode == 0,
            $"dotnet-counters is not installed for this repository even after `dotnet tool restore` in the repository root. `dotnet tool run dotnet-counters` said: {toolText}");

        string dir = Directory.CreateTempSubdirectory("hci-counters-").FullName;
        string socket = Path.Combine(dir, "s.sock");
        string csv = Path.Combine(dir, "counters.csv");
        var log = new ConcurrentQueue<string>();
        var ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (string arg in new[] { SampleProcesses.Built("Hci.Samples.HostType", "hci-hosttype.dll"), "--socket", socket, "--ioengine", "null", "--size", "64m", "--scheduler", "fifo", "--queues", "1" })
        {
            psi.ArgumentList.Add(arg);
        }

        using var host = Process.Start(psi)!;
        host.ErrorDataReceived += (_, e) =>
        {
            if (e.Data != null)
            {
                log.Enqueue(e.Data);
                if (e.Data.Contains("hci-hosttype: ready:", StringComparison.Ordinal))
                {
                    ready.TrySetResult();
                }
            }
        };
        host.BeginErrorReadLine();
        host.BeginOutputReadLine();
        try
        {
            await Task.WhenAny(ready.Task, host.WaitForExitAsync()).WaitAsync(Deadline);
            Assert.True(ready.Task.IsCompleted, "hci-hosttype did not become ready:\n" + string.Join('\n', log));

            // I/O runs all the while dotnet-counters samples, so that every rate it reads is of a busy host.
            using var stop = new CancellationTokenSource();
            await using var client = VhostUserBlkClient.Connect(new VhostUserBlkClientOptions { SocketPath = socket, QueueCount = 1 });
            long done = 0;
            var io = Task.Run(async () =>
            {
                using var buffer = new AlignedBuffer(4096);
                for (long i = 0; !stop.IsCancellationRequested; i++)
                {
                    await client.WriteAsync(i % 1024 * 4096, buffer.Memory);
                    await client.ReadAsync(i % 1024 * 4096, buffer.Memory);
                    Interlocked.Increment(ref done);
                }
            });

            var (code, text) = await RunAsync(
                root,
                "dotnet",
                ["tool", "run", "dotnet-counters", "collect", "--process-id", host.Id.ToString(CultureInfo.InvariantCulture), "--counters", string.Join(',', Meters),
                 "--format", "csv", "--output", csv, "--refresh-interval", "1", "--duration", "00:00:00:05"]);
            await stop.CancelAsync();
            await io;
            output.WriteLine(text);
            Assert.True(code == 0, $"dotnet-counters collect exited {code}: {text}");
            Assert.True(Interlocked.Read(ref done) > 0, "the client did no I/O");
            Assert.True(File.Exists(csv), $"dotnet-counters wrote no {csv}: {text}");

            // Timestamp,Provider,Counter Name,Counter Type,Mean/Increment; the counter name is the instrument's,
            // then its unit and tags: "hci.vhost.requests ({request} / 1 sec)[hci.socket=...]".
            var largest = new Dictionary<string, double>();
            foreach (string line in File.ReadLines(csv).Skip(1))
            {
                string[] cells = line.Split(',');
                Assert.True(cells.Length == 5, $"unexpected line in the CSV: {line}");
                Assert.Contains(cells[1], Meters);
                string instrument = cells[2].Split(' ', '[')[0];
                double value = double.Parse(cells[4], CultureInfo.InvariantCulture);
                largest[instrument] = Math.Max(largest.GetValueOrDefault(instrument), value);
            }

            string seen = string.Join(", ", largest.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => $"{p.Key}={p.Value}"));
            foreach (string instrument in Moving)
            {
                Assert.True(largest.GetValueOrDefault(instrument) > 0, $"dotnet-counters read no nonzero {instrument} (read: {seen})");
            }

            foreach (string instrument in Present)
            {
                Assert.True(largest.ContainsKey(instrument), $"dotnet-counters did not read {instrument} (read: {seen})");
            }
        }
        finally
        {
            if (!host.HasExited)
            {
                host.Kill();
                await host.WaitForExitAsync();
            }

            foreach (string line in log)
            {
                output.WriteLine(line);
            }

            Directory.Delete(dir, recursive: true);
        }
    }

    // Runs a command in the repository root (where `dotnet tool run` finds the tool manifest), to its end.
    private static async Task<(int Code, string Output)> RunAsync(string root, string program, IEnumerable<string> args)
    {
        var psi = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = root };
        foreach (string arg in args)
        {
            psi.ArgumentList.Add(arg);
        }

        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        try
        {
            await process.WaitForExitAsync().WaitAsync(Deadline);
        }
        catch (TimeoutException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{program} {string.Join(' ', psi.ArgumentList)} did not finish within {Deadline.TotalSeconds} s");
        }

        return (process.ExitCode, await stdout + await stderr);
    }

    private static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Hci.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException("The repository root (Hci.sln) is not above the test's directory.");
    }
}
