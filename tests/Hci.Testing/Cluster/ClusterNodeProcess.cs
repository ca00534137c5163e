using System.Diagnostics;

namespace Hci.Testing;

/// <summary>
/// One <c>hci-hosttype</c> node run as a real process by <see cref="ClusterFixture"/>: its own directory, device files,
/// socket directory and port. It can be SIGKILLed and started again with the same flags and files; every line it logs
/// is kept, stamped with the fixture's clock, so that tests can wait for a line and time what happened.
/// </summary>
public sealed class ClusterNodeProcess : IAsyncDisposable
{
    /// <summary>How long a node may take to log that it is ready on a loaded CI machine.</summary>
    public static readonly TimeSpan StartDeadline = TimeSpan.FromSeconds(60);

    private readonly string _hostDll;
    private readonly IReadOnlyList<string> _arguments;
    private readonly Stopwatch _clock;
    private readonly List<NodeLogLine> _lines = [];
    private readonly StreamWriter _log;
    private Process? _process;

    internal ClusterNodeProcess(string hostDll, string id, string directory, IReadOnlyList<string> deviceFiles, IReadOnlyList<string> arguments, Stopwatch clock)
    {
        _hostDll = hostDll;
        Id = id;
        Directory = directory;
        DeviceFiles = deviceFiles;
        _arguments = arguments;
        _clock = clock;
        _log = new StreamWriter(Path.Combine(directory, "node.log"), append: true) { AutoFlush = true };
    }

    /// <summary>Where peers reach the node's replicas (<c>--listen</c>), or null on the local store.</summary>
    public string? Address
    {
        get
        {
            int i = _arguments.ToList().IndexOf("--listen");
            return i >= 0 ? _arguments[i + 1] : null;
        }
    }

    /// <summary>The rig host (network namespace and address) the node runs in, or null in the root namespace.</summary>
    public NetworkHost? Host { get; internal init; }

    /// <summary>A command the node's <c>dotnet</c> runs under, such as <c>ip netns exec NS</c> (empty: none); it must
    /// exec the command in its own process, so that the process id and SIGKILL are the node's.</summary>
    internal IReadOnlyList<string> CommandPrefix { get; init; } = [];

    /// <summary>The node's id (<c>--node</c>).</summary>
    public string Id { get; }

    /// <summary>The node's directory: its device files, its sockets (<c>sock/</c>) and its log (<c>node.log</c>).</summary>
    public string Directory { get; }

    /// <summary>The node's device files, in the order of its <c>--device</c> flags (device index order).</summary>
    public IReadOnlyList<string> DeviceFiles { get; }

    /// <summary>The directory the node serves its volumes' vhost-user sockets in.</summary>
    public string SocketDirectory => Path.Combine(Directory, "sock");

    /// <summary>True while the process runs.</summary>
    public bool IsRunning => _process is { HasExited: false };

    /// <summary>The process id while it runs.</summary>
    public int ProcessId => _process?.Id ?? 0;

    /// <summary>The vhost-user socket the node serves <paramref name="volume"/> on.</summary>
    /// <param name="volume">The volume's name.</param>
    /// <returns>The socket's path.</returns>
    public string SocketPath(string volume) => Path.Combine(SocketDirectory, volume + ".sock");

    /// <summary>Every line the node logged (all its runs), in order.</summary>
    public IReadOnlyList<NodeLogLine> Lines
    {
        get
        {
            lock (_lines)
            {
                return [.. _lines];
            }
        }
    }

    /// <summary>How many lines the node has logged so far: a mark to wait for lines logged after it.</summary>
    public int LineCount
    {
        get
        {
            lock (_lines)
            {
                return _lines.Count;
            }
        }
    }

    /// <summary>The last lines, for failure messages.</summary>
    public string Tail
    {
        get
        {
            lock (_lines)
            {
                return $"--- {Id} (last lines) ---\n" + string.Join('\n', _lines.Skip(Math.Max(0, _lines.Count - 40)).Select(l => l.Text));
            }
        }
    }

    /// <summary>Starts the node and waits until it logs that it is ready (a cluster node registered and serving).</summary>
    /// <returns>The line that said so.</returns>
    public async Task<NodeLogLine> StartAsync()
    {
        if (IsRunning)
        {
            throw new InvalidOperationException($"{Id} runs already");
        }

        int mark = LineCount;
        var psi = new ProcessStartInfo(CommandPrefix.Count > 0 ? CommandPrefix[0] : "dotnet")
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (string arg in CommandPrefix.Skip(1).Concat(CommandPrefix.Count > 0 ? ["dotnet"] : []))
        {
            psi.ArgumentList.Add(arg);
        }

        psi.ArgumentList.Add(_hostDll);
        foreach (string arg in _arguments)
        {
            psi.ArgumentList.Add(arg);
        }

        var process = Process.Start(psi)!;
        _process = process;
        process.OutputDataReceived += (_, e) => Remember(e.Data);
        process.ErrorDataReceived += (_, e) => Remember(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return await WaitForLineAsync(l => l.Contains($"hci-hosttype: ready: cluster node {Id}", StringComparison.Ordinal), $"{Id} to be ready", mark, StartDeadline).ConfigureAwait(false);
    }

    /// <summary>Waits for a line logged at or after <paramref name="from"/> (a <see cref="LineCount"/> taken earlier).</summary>
    /// <param name="match">What the line must hold.</param>
    /// <param name="what">What is awaited, for the failure message.</param>
    /// <param name="from">The first line index to look at.</param>
    /// <param name="deadline">How long to wait; <see cref="Deadline.Default"/> if null.</param>
    /// <returns>The first matching line.</returns>
    public async Task<NodeLogLine> WaitForLineAsync(Func<string, bool> match, string what, int from = 0, TimeSpan? deadline = null)
    {
        var limit = deadline ?? Deadline.Default;
        var watch = Stopwatch.StartNew();
        int next = from;
        while (true)
        {
            lock (_lines)
            {
                for (; next < _lines.Count; next++)
                {
                    if (match(_lines[next].Text))
                    {
                        return _lines[next];
                    }
                }
            }

            if (!IsRunning && _process is { } exited)
            {
                // The output of a process that exited is complete once WaitForExit returns.
                exited.WaitForExit();
                lock (_lines)
                {
                    for (; next < _lines.Count; next++)
                    {
                        if (match(_lines[next].Text))
                        {
                            return _lines[next];
                        }
                    }
                }

                throw new InvalidOperationException($"{Id} exited with {exited.ExitCode} while the test waited for {what}\n{Tail}");
            }

            if (watch.Elapsed > limit)
            {
                throw new TimeoutException($"timed out after {limit.TotalSeconds:0.#} s waiting for {what}\n{Tail}");
            }

            await Task.Delay(10).ConfigureAwait(false);
        }
    }

    /// <summary>Every line logged at or after <paramref name="from"/> that holds <paramref name="text"/>.</summary>
    /// <param name="text">The text to look for.</param>
    /// <param name="from">The first line index to look at.</param>
    /// <returns>The lines.</returns>
    public IReadOnlyList<NodeLogLine> LinesContaining(string text, int from = 0)
    {
        lock (_lines)
        {
            return [.. _lines.Skip(from).Where(l => l.Text.Contains(text, StringComparison.Ordinal))];
        }
    }

    /// <summary>Kills the node with SIGKILL (no clean-up of any kind on its side) and waits for it to exit.</summary>
    public void Kill()
    {
        var process = _process;
        if (process is null || process.HasExited)
        {
            return;
        }

        try
        {
            process.Kill();
        }
        catch (InvalidOperationException)
        {
            // Exited meanwhile.
        }

        process.WaitForExit();
        Remember($"[fixture] {Id} killed with SIGKILL");
    }

    /// <summary>Stops the node with SIGTERM (a clean stop: volumes flushed and detached) and waits for it; SIGKILL
    /// if it has not exited within the deadline.</summary>
    /// <returns>A task that completes when the process has exited.</returns>
    public async Task StopAsync()
    {
        var process = _process;
        if (process is null || process.HasExited)
        {
            return;
        }

        _ = Tmds.Linux.LibC.kill(process.Id, Tmds.Linux.LibC.SIGTERM);
        using var timeout = new CancellationTokenSource(Deadline.Default);
        try
        {
            await process.WaitForExitAsync(timeout.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            Kill();
            throw new TimeoutException($"{Id} did not stop within {Deadline.Default.TotalSeconds} s of SIGTERM (killed)\n{Tail}");
        }

        process.WaitForExit();
        Remember($"[fixture] {Id} stopped with SIGTERM, exit code {process.ExitCode}");
    }

    /// <summary>Kills the process if it runs and closes the log; the directory stays (the fixture deletes it).</summary>
    /// <returns>A completed task.</returns>
    public ValueTask DisposeAsync()
    {
        Kill();
        _process?.Dispose();
        _process = null;
        lock (_lines)
        {
            _log.Dispose();
        }

        return ValueTask.CompletedTask;
    }

    private void Remember(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_lines)
        {
            _lines.Add(new NodeLogLine(_clock.Elapsed, line));
            try
            {
                _log.WriteLine(line);
            }
            catch (ObjectDisposedException)
            {
            }
        }
    }
}

/// <summary>A line a node logged, with when the test saw it (the fixture's clock).</summary>
/// <param name="At">When the line arrived, on <see cref="ClusterFixture.Now"/>'s clock.</param>
/// <param name="Text">The line.</param>
public readonly record struct NodeLogLine(TimeSpan At, string Text);
