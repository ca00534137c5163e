using System.Diagnostics;

namespace Hci.Bench.Tests;

/// <summary>The sample programs as real processes: where the build put them, and running one to its end.</summary>
internal static class SampleProcesses
{
    /// <summary>The built <paramref name="dll"/> of samples/<paramref name="project"/>, in this test's configuration.</summary>
    public static string Built(string project, string dll)
    {
        string configuration = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)).Parent!.Name;
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Hci.sln")))
            {
                return Path.Combine(dir.FullName, "samples", project, "bin", configuration, "net10.0", dll);
            }
        }

        throw new InvalidOperationException("The repository root (Hci.sln) is not above the test's directory.");
    }

    /// <summary>Runs <paramref name="program"/> to its end (at most a minute), with <paramref name="environment"/> added
    /// to this process's: its exit code, and its output and errors.</summary>
    public static async Task<(int Code, string Output)> RunAsync(string program, IEnumerable<string> args, Dictionary<string, string>? environment = null)
    {
        var psi = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string arg in args)
        {
            psi.ArgumentList.Add(arg);
        }

        foreach (var (name, value) in environment ?? [])
        {
            psi.Environment[name] = value;
        }

        using var process = Process.Start(psi)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await process.WaitForExitAsync(timeout.Token);
        return (process.ExitCode, await output + await error);
    }
}
