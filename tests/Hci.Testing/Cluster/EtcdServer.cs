using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Hci.Testing;

/// <summary>
/// A real etcd of the test's own: the <c>etcd</c> binary (Debian's etcd-server) on free 127.0.0.1 client and peer
/// ports with a temporary data directory, ready when its <c>/health</c> says so. Disposing kills it, waits for it and
/// deletes the directory, always. It can be killed and restarted on the same ports and data to test recovery.
/// </summary>
public sealed class EtcdServer : IAsyncDisposable
{
    /// <summary>How long etcd may take to become healthy on a loaded CI machine.</summary>
    public static readonly TimeSpan StartDeadline = TimeSpan.FromSeconds(30);

    private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromSeconds(5) };
    private readonly EtcdProcessTail _output = new();
    private Process? _process;

    private EtcdServer(string dataDirectory, int clientPort, int peerPort)
    {
        DataDirectory = dataDirectory;
        ClientPort = clientPort;
        PeerPort = peerPort;
    }

    /// <summary>The client URL, such as <c>http://127.0.0.1:41234</c>.</summary>
    public string ClientUrl => $"http://127.0.0.1:{ClientPort}";

    /// <summary>The client port.</summary>
    public int ClientPort { get; }

    /// <summary>The peer port.</summary>
    public int PeerPort { get; }

    /// <summary>The data directory (deleted on dispose).</summary>
    public string DataDirectory { get; }

    /// <summary>True while the etcd process runs.</summary>
    public bool IsRunning => _process is { HasExited: false };

    /// <summary>The last lines etcd printed, for failure messages.</summary>
    public string Output => _output.Text;

    /// <summary>Starts an etcd and waits until it is healthy.</summary>
    /// <returns>The running server.</returns>
    /// <exception cref="InvalidOperationException">etcd is not installed, or did not become healthy in time; the message says why.</exception>
    public static async Task<EtcdServer> StartAsync()
    {
        string dir = Directory.CreateTempSubdirectory("hci-etcd-").FullName;
        EtcdServer? server = null;
        try
        {
            // A port found free may be taken before etcd binds it; then etcd exits and the next try takes others.
            for (int attempt = 1; ; attempt++)
            {
                server = new EtcdServer(dir, FreePort(), FreePort());
                try
                {
                    await server.RunAsync().ConfigureAwait(false);
                    return server;
                }
                catch (EtcdExitedException) when (attempt < 3)
                {
                    server.Kill();
                }
            }
        }
        catch
        {
            if (server is not null)
            {
                await server.DisposeAsync().ConfigureAwait(false);
            }
            else
            {
                Directory.Delete(dir, recursive: true);
            }

            throw;
        }
    }

    /// <summary>Kills etcd (SIGKILL) and waits for it to exit; the data directory and ports stay for <see cref="RestartAsync"/>.</summary>
    public void Kill()
    {
        EtcdProcessTail.Kill(_process);
        _process = null;
    }

    /// <summary>Stops etcd with SIGSTOP: it keeps its connections but answers nothing (a hung or partitioned member).</summary>
    public void Freeze() => Signal(Tmds.Linux.LibC.SIGSTOP);

    /// <summary>Resumes a frozen etcd with SIGCONT.</summary>
    public void Thaw() => Signal(Tmds.Linux.LibC.SIGCONT);

    private void Signal(int signal)
    {
        var process = _process ?? throw new InvalidOperationException("etcd is not running");
        if (Tmds.Linux.LibC.kill(process.Id, signal) != 0)
        {
            throw new InvalidOperationException($"kill({process.Id}, {signal}) failed");
        }
    }

    /// <summary>Kills etcd if it runs, starts it again on the same ports and data, and waits until it is healthy.</summary>
    /// <returns>A task that completes when etcd is healthy.</returns>
    public Task RestartAsync()
    {
        Kill();
        return RunAsync();
    }

    /// <summary>Compacts etcd's history up to <paramref name="revision"/> (through its HTTP gateway, no etcdctl needed).</summary>
    /// <param name="revision">The revision to compact to.</param>
    /// <returns>A task that completes when the compaction is applied.</returns>
    public Task CompactAsync(long revision) =>
        PostAsync("/v3/kv/compaction", string.Create(CultureInfo.InvariantCulture, $"{{\"revision\":\"{revision}\",\"physical\":true}}"), $"the compaction to {revision}");

    private async Task PostAsync(string path, string body, string what)
    {
        using var content = new StringContent(body, Encoding.UTF8, "application/json");
        using var response = await Http.PostAsync(new Uri($"{ClientUrl}{path}"), content).ConfigureAwait(false);
        string text = await response.Content.ReadAsStringAsync().ConfigureAwait(false);
        if (!response.IsSuccessStatusCode)
        {
            throw new InvalidOperationException($"etcd refused {what}: {(int)response.StatusCode} {text}");
        }
    }

    /// <summary>Revokes a lease as another client would (through etcd's HTTP gateway).</summary>
    /// <param name="id">The lease.</param>
    /// <returns>A task that completes when the lease is revoked.</returns>
    public Task RevokeLeaseAsync(long id) =>
        PostAsync("/v3/lease/revoke", string.Create(CultureInfo.InvariantCulture, $"{{\"ID\":\"{id}\"}}"), $"the revoke of lease {id}");

    /// <summary>Kills etcd, waits for it, and deletes its data directory.</summary>
    /// <returns>A task that completes when everything is gone.</returns>
    public ValueTask DisposeAsync()
    {
        Kill();
        if (Directory.Exists(DataDirectory))
        {
            Directory.Delete(DataDirectory, recursive: true);
        }

        return ValueTask.CompletedTask;
    }

    private async Task RunAsync()
    {
        string peer = $"http://127.0.0.1:{PeerPort}";
        var psi = new ProcessStartInfo("etcd")
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var arg in new[]
        {
            "--name", "hci-test", "--data-dir", DataDirectory,
            "--listen-client-urls", ClientUrl, "--advertise-client-urls", ClientUrl,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", $"hci-test={peer}", "--initial-cluster-state", "new",
            "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn",
        })
        {
            psi.ArgumentList.Add(arg);
        }

        // etcd must not read configuration meant for the machine's own etcd (ETCD_* variables of /etc/default/etcd).
        foreach (var name in psi.Environment.Keys.Where(k => k.StartsWith("ETCD_", StringComparison.Ordinal)).ToList())
        {
            psi.Environment.Remove(name);
        }

        Process process;
        try
        {
            process = Process.Start(psi)!;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new InvalidOperationException(
                "The etcd binary was not found on PATH: install it with `apt-get install etcd-server` (Debian); .ci/run installs it. The tests start their own etcd and never use the package's service.", e);
        }

        _process = process;
        process.OutputDataReceived += (_, e) => _output.Add(e.Data);
        process.ErrorDataReceived += (_, e) => _output.Add(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();

        var watch = Stopwatch.StartNew();
        while (true)
        {
            if (process.HasExited)
            {
                process.WaitForExit();
                throw new EtcdExitedException($"etcd exited with {process.ExitCode} before it was healthy (ports {ClientPort}/{PeerPort}): {Output}");
            }

            if (await EtcdProcessTail.IsHealthyAsync(Http, ClientUrl).ConfigureAwait(false))
            {
                return;
            }

            if (watch.Elapsed > StartDeadline)
            {
                Kill();
                throw new InvalidOperationException($"etcd did not become healthy within {StartDeadline.TotalSeconds} s at {ClientUrl}: {Output}");
            }

            await Task.Delay(20).ConfigureAwait(false);
        }
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    private sealed class EtcdExitedException(string message) : InvalidOperationException(message);
}
