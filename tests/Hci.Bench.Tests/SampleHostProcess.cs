using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace Hci.Bench.Tests;

/// <summary>
/// A sample host (<c>dotnet PROGRAM.dll ARGS</c>) run as a real process for as long as a test needs it: every line it
/// writes is kept, a test waits for a line (or any condition on the log) with a deadline and no timer, stops it with
/// SIGTERM as systemd and the rigs do, and disposing kills whatever still runs.
/// </summary>
internal sealed class SampleHostProcess : IAsyncDisposable
{
    /// <summary>How long a host may take to say what a test waits for on a loaded 2-core machine.</summary>
    public static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);

    private readonly StringBuilder _log = new();
    private readonly SemaphoreSlim _lines = new(0);
    private readonly Process _process;
    private readonly string _name;

    private SampleHostProcess(string dll, IEnumerable<string> args, IReadOnlyDictionary<string, string>? environment, string? workingDirectory)
    {
        _name = Path.GetFileNameWithoutExtension(dll);
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        if (workingDirectory != null)
        {
            psi.WorkingDirectory = workingDirectory;
        }

        psi.ArgumentList.Add(dll);
        foreach (string arg in args)
        {
            psi.ArgumentList.Add(arg);
        }

        foreach (var (name, value) in environment ?? new Dictionary<string, string>())
        {
            psi.Environment[name] = value;
        }

        _process = new Process { StartInfo = psi, EnableRaisingEvents = true };
        _process.OutputDataReceived += (_, e) => Add(e.Data);
        _process.ErrorDataReceived += (_, e) => Add(e.Data);
        _process.Exited += (_, _) => _lines.Release();
        _process.Start();
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    /// <summary>Everything the host wrote so far, standard output and error interleaved as they came.</summary>
    public string Log
    {
        get
        {
            lock (_log)
            {
                return _log.ToString();
            }
        }
    }

    /// <summary>The process id.</summary>
    public int Id => _process.Id;

    /// <summary>Starts <paramref name="dll"/> with <paramref name="args"/> (and <paramref name="environment"/> added).</summary>
    public static SampleHostProcess Start(string dll, IEnumerable<string> args, IReadOnlyDictionary<string, string>? environment = null, string? workingDirectory = null)
        => new(dll, args, environment, workingDirectory);

    /// <summary>Waits until the log contains <paramref name="text"/>; fails the test if the host exits first or the
    /// deadline passes.</summary>
    public Task WaitForLogAsync(string text) => WaitForAsync(log => log.Contains(text, StringComparison.Ordinal), $"'{text}'");

    /// <summary>Waits until <paramref name="condition"/> holds for the log, woken by each line the host writes; fails the
    /// test if the host exits first or the deadline passes.</summary>
    public async Task WaitForAsync(Func<string, bool> condition, string what)
    {
        var watch = Stopwatch.StartNew();
        while (!condition(Log))
        {
            Assert.False(_process.HasExited, $"{_name} exited before {what}: {Log}");
            var left = Deadline - watch.Elapsed;
            Assert.True(left > TimeSpan.Zero && await _lines.WaitAsync(left), $"no {what} from {_name} within {Deadline.TotalSeconds} s: {Log}");
        }
    }

    /// <summary>Sends SIGTERM and waits (at most the deadline) for the host to exit: its exit code.</summary>
    public async Task<int> TerminateAsync()
    {
        using (var kill = Process.Start("kill", ["-TERM", _process.Id.ToString(CultureInfo.InvariantCulture)]))
        {
            await kill.WaitForExitAsync();
        }

        using var timeout = new CancellationTokenSource(Deadline);
        await _process.WaitForExitAsync(timeout.Token);
        return _process.ExitCode;
    }

    /// <summary>Kills the host if it still runs, and waits for it.</summary>
    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
        }

        await _process.WaitForExitAsync();
        _process.Dispose();
    }

    private void Add(string? line)
    {
        if (line == null)
        {
            return;
        }

        lock (_log)
        {
            _log.AppendLine(line);
        }

        _lines.Release();
    }
}
