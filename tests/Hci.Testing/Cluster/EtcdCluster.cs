using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;

namespace Hci.Testing;

/// <summary>
/// A real etcd cluster of the test's own, started as <see cref="EtcdServer"/> starts one member: Debian's <c>etcd</c>
/// binary, a temporary data directory per member, ready when every member's <c>/health</c> says so. The members run
/// on free 127.0.0.1 ports, or each in a host of a <see cref="NetworkNamespaces"/> rig (on its address, ports 2379 and
/// 2380) so that a partition can cut a node from etcd. A member can be SIGKILLed and restarted on the same ports and
/// data. Disposing kills every member and deletes the directories, always.
/// </summary>
public sealed class EtcdCluster : IAsyncDisposable
{
    private readonly List<EtcdMember> _members = [];

    private EtcdCluster(string directory) => Directory = directory;

    /// <summary>The members, <c>etcd1..N</c>.</summary>
    public IReadOnlyList<EtcdMember> Members => _members;

    /// <summary>Every member's client URL, comma-separated (what <c>--etcd</c> takes).</summary>
    public string ClientUrls => string.Join(',', _members.Select(m => m.ClientUrl));

    /// <summary>The directory of every member's data (deleted on dispose).</summary>
    public string Directory { get; }

    /// <summary>Starts <paramref name="members"/> members at once and waits until each is healthy (a leader elected).</summary>
    /// <param name="members">How many members (3 for a cluster that survives the loss of one).</param>
    /// <param name="network">A rig to put each member in a host of its own (<c>etcd1..N</c>), or null for 127.0.0.1.</param>
    /// <returns>The running cluster.</returns>
    /// <exception cref="InvalidOperationException">etcd is not installed or did not become healthy in time; the message says why.</exception>
    public static async Task<EtcdCluster> StartAsync(int members = 3, NetworkNamespaces? network = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(members, 1);
        // A port found free may be taken before etcd binds it (loopback only): then the whole cluster starts again on others.
        for (int attempt = 1; ; attempt++)
        {
            var cluster = new EtcdCluster(System.IO.Directory.CreateTempSubdirectory("hci-etcd-cluster-").FullName);
            try
            {
                string token = $"hci-test-{Guid.NewGuid():N}";
                var hosts = new List<NetworkHost?>();
                for (int i = 1; i <= members; i++)
                {
                    string name = string.Create(CultureInfo.InvariantCulture, $"etcd{i}");
                    var host = network is null ? null : network.Hosts.FirstOrDefault(h => h.Name == name) ?? network.Add(name);
                    string address = host?.Address ?? "127.0.0.1";
                    int clientPort = host is null ? FreePort() : 2379;
                    int peerPort = host is null ? FreePort() : 2380;
                    cluster._members.Add(new EtcdMember(name, Path.Combine(cluster.Directory, name), address, clientPort, peerPort, host));
                }

                string initial = string.Join(',', cluster._members.Select(m => $"{m.Name}={m.PeerUrl}"));
                foreach (var member in cluster._members)
                {
                    member.Configure(initial, token);
                    member.Launch();
                }

                await Task.WhenAll(cluster._members.Select(m => m.WaitHealthyAsync())).ConfigureAwait(false);
                return cluster;
            }
            catch (Exception e)
            {
                await cluster.DisposeAsync().ConfigureAwait(false);
                if (e is not EtcdMember.ExitedException || network is not null || attempt >= 3)
                {
                    throw;
                }
            }
        }
    }

    /// <summary>The member that is the leader now, asked of the running members (etcd's maintenance status).</summary>
    /// <returns>The leader.</returns>
    public async Task<EtcdMember> LeaderAsync()
    {
        var known = new List<(EtcdMember Member, ulong Id, ulong Leader)>();
        foreach (var member in _members.Where(m => m.IsRunning))
        {
            try
            {
                var (id, leader) = await member.StatusAsync().ConfigureAwait(false);
                known.Add((member, id, leader));
            }
            catch (HttpRequestException)
            {
                // Not answering: it knows no leader.
            }
            catch (TaskCanceledException)
            {
            }
        }

        return known.FirstOrDefault(k => k.Leader != 0 && known.Any(o => o.Leader == k.Id)).Member
            ?? throw new InvalidOperationException("no running etcd member knows a leader among the running members");
    }

    /// <summary>Kills every member and deletes the data directories.</summary>
    /// <returns>A task that completes when everything is gone.</returns>
    public ValueTask DisposeAsync()
    {
        foreach (var member in _members)
        {
            member.Kill();
        }

        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (DirectoryNotFoundException)
        {
        }

        return ValueTask.CompletedTask;
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}

/// <summary>One member of an <see cref="EtcdCluster"/>: its process, URLs and data directory.</summary>
public sealed class EtcdMember
{
    private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromSeconds(2) };
    private readonly EtcdProcessTail _output = new();
    private readonly List<string> _arguments = [];
    private Process? _process;

    internal EtcdMember(string name, string dataDirectory, string address, int clientPort, int peerPort, NetworkHost? host)
    {
        Name = name;
        DataDirectory = dataDirectory;
        ClientUrl = string.Create(CultureInfo.InvariantCulture, $"http://{address}:{clientPort}");
        PeerUrl = string.Create(CultureInfo.InvariantCulture, $"http://{address}:{peerPort}");
        Host = host;
    }

    /// <summary>The member's name, <c>etcd1..N</c>.</summary>
    public string Name { get; }

    /// <summary>The client URL, such as <c>http://127.0.0.1:41234</c>.</summary>
    public string ClientUrl { get; }

    /// <summary>The peer URL.</summary>
    public string PeerUrl { get; }

    /// <summary>The data directory.</summary>
    public string DataDirectory { get; }

    /// <summary>The rig host it runs in, or null on 127.0.0.1.</summary>
    public NetworkHost? Host { get; }

    /// <summary>True while the process runs.</summary>
    public bool IsRunning => _process is { HasExited: false };

    /// <summary>The last lines the member printed, for failure messages.</summary>
    public string Output => _output.Text;

    /// <summary>Kills the member with SIGKILL and waits for it; its data and ports stay for <see cref="RestartAsync"/>.</summary>
    public void Kill()
    {
        EtcdProcessTail.Kill(_process);
        _process = null;
    }

    /// <summary>Kills the member if it runs, starts it again on the same ports and data, and waits until it is healthy.</summary>
    /// <returns>A task that completes when the member is healthy.</returns>
    public Task RestartAsync()
    {
        Kill();
        Launch();
        return WaitHealthyAsync();
    }

    /// <summary>Waits until the member's <c>/health</c> says true (it has a leader and answers a read).</summary>
    /// <returns>A task that completes when it is healthy.</returns>
    /// <exception cref="InvalidOperationException">It exited or was not healthy within <see cref="EtcdServer.StartDeadline"/>.</exception>
    public async Task WaitHealthyAsync()
    {
        var watch = Stopwatch.StartNew();
        while (true)
        {
            var process = _process ?? throw new InvalidOperationException($"{Name} is not running");
            if (process.HasExited)
            {
                process.WaitForExit();
                throw new ExitedException($"etcd member {Name} exited with {process.ExitCode} before it was healthy ({ClientUrl}): {Output}");
            }

            if (await EtcdProcessTail.IsHealthyAsync(Http, ClientUrl).ConfigureAwait(false))
            {
                return;
            }

            if (watch.Elapsed > EtcdServer.StartDeadline)
            {
                throw new InvalidOperationException($"etcd member {Name} did not become healthy within {EtcdServer.StartDeadline.TotalSeconds} s at {ClientUrl}: {Output}");
            }

            await Task.Delay(50).ConfigureAwait(false);
        }
    }

    /// <summary>The member's id and the leader it knows (0 for none), from etcd's maintenance status.</summary>
    /// <returns>The two ids.</returns>
    public async Task<(ulong Id, ulong Leader)> StatusAsync()
    {
        using var content = new StringContent("{}", Encoding.UTF8, "application/json");
        using var response = await Http.PostAsync(new Uri($"{ClientUrl}/v3/maintenance/status"), content).ConfigureAwait(false);
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync().ConfigureAwait(false));
        var root = doc.RootElement;
        ulong id = ulong.Parse(root.GetProperty("header").GetProperty("member_id").GetString()!, CultureInfo.InvariantCulture);
        ulong leader = root.TryGetProperty("leader", out var l) ? ulong.Parse(l.GetString()!, CultureInfo.InvariantCulture) : 0;
        return (id, leader);
    }

    internal void Configure(string initialCluster, string token)
    {
        _arguments.Clear();
        _arguments.AddRange([
            "--name", Name, "--data-dir", DataDirectory,
            "--listen-client-urls", ClientUrl, "--advertise-client-urls", ClientUrl,
            "--listen-peer-urls", PeerUrl, "--initial-advertise-peer-urls", PeerUrl,
            "--initial-cluster", initialCluster, "--initial-cluster-state", "new", "--initial-cluster-token", token,
            "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn",
        ]);
    }

    internal void Launch()
    {
        // In a rig host: `ip netns exec NS etcd ...` (ip replaces itself with etcd: the process id is etcd's).
        var command = (Host?.Exec ?? []).Append("etcd").Concat(_arguments).ToList();
        var psi = new ProcessStartInfo(command[0])
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (string arg in command.Skip(1))
        {
            psi.ArgumentList.Add(arg);
        }

        // etcd must not read configuration meant for the machine's own etcd (ETCD_* variables of /etc/default/etcd).
        foreach (var name in psi.Environment.Keys.Where(k => k.StartsWith("ETCD_", StringComparison.Ordinal)).ToList())
        {
            psi.Environment.Remove(name);
        }

        try
        {
            _process = Process.Start(psi)!;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new InvalidOperationException(
                "The etcd binary was not found on PATH: install it with `apt-get install etcd-server` (Debian); .ci/run installs it.", e);
        }

        _process.OutputDataReceived += (_, e) => _output.Add(e.Data);
        _process.ErrorDataReceived += (_, e) => _output.Add(e.Data);
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    internal sealed class ExitedException(string message) : InvalidOperationException(message);
}
