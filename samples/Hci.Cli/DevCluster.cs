using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Hci.Core.Cluster;
using Hci.Samples.Shared;

namespace Hci.Cli;

/// <summary>
/// <c>hci dev up</c> and <c>hci dev down</c>: a cluster on this machine for trying Hci. etcd and N hci-hosttype nodes
/// run on loopback as background processes of their own session (they outlive <c>hci</c>); what runs is recorded in
/// <c>DIR/pids</c> (one line per process: pid and program name) and the etcd URL in <c>DIR/etcd.url</c>.
/// </summary>
/// <remarks>hci-hosttype is found, in order: <c>$HCI_HOSTTYPE</c>; <c>hosttype/hci-hosttype</c> under hci's own
/// directory (the Hci.Cli project copies the host's build output there, so <c>dotnet run --project samples/Hci.Cli</c>
/// and the built binary both find it); <c>hci-hosttype</c> next to hci; <c>hci-hosttype</c> on the PATH.</remarks>
internal static partial class DevCluster
{
    private const string PidsName = "pids";
    private const string UrlName = "etcd.url";
    private static readonly TimeSpan StartDeadline = TimeSpan.FromSeconds(90);
    private static readonly TimeSpan StopDeadline = TimeSpan.FromSeconds(10);

    public static async Task<int> UpAsync(int nodes, string dir, long size, TextWriter output)
    {
        if (nodes is < 1 or > 16)
        {
            throw new CliUsageException($"--nodes {nodes}: give 1 to 16.");
        }

        dir = Path.GetFullPath(dir);
        Directory.CreateDirectory(dir);
        var running = ReadPids(dir).Where(p => IsRunning(p.Pid, p.Name)).ToList();
        if (running.Count > 0)
        {
            throw new DevException($"a dev cluster already runs in {dir} ({string.Join(", ", running.Select(p => $"{p.Name} pid {p.Pid}"))}): stop it with hci dev down --dir {dir}.");
        }

        string etcd = FindOnPath("etcd") ?? throw new DevException("etcd is not installed (hci dev up runs one for the cluster store): install it with apt-get install etcd-server, or put an etcd binary on the PATH.");
        string host = FindHostType();
        string key = Path.Combine(dir, "cluster.key");
        if (!File.Exists(key))
        {
            Hci.Transport.Replication.ClusterKey.Generate(key);
        }

        int clientPort = FreePort();
        int peerPort = FreePort();
        string url = $"http://127.0.0.1:{clientPort}";
        var started = new List<(int Pid, string Name)>();
        try
        {
            output.WriteLine($"starting etcd on {url} (data in {Path.Combine(dir, "etcd")}, log {Path.Combine(dir, "etcd.log")})");
            started.Add((Launch(etcd, "etcd", ["--name", "hci-dev", "--data-dir", Path.Combine(dir, "etcd"), "--listen-client-urls", url, "--advertise-client-urls", url, "--listen-peer-urls", $"http://127.0.0.1:{peerPort}", "--initial-advertise-peer-urls", $"http://127.0.0.1:{peerPort}", "--initial-cluster", $"hci-dev=http://127.0.0.1:{peerPort}"], Path.Combine(dir, "etcd.log")), "etcd"));
            WritePids(dir, started);
            await File.WriteAllTextAsync(Path.Combine(dir, UrlName), url + "\n").ConfigureAwait(false);
            await WaitForPortAsync(clientPort, started[0], Path.Combine(dir, "etcd.log")).ConfigureAwait(false);

            for (int i = 1; i <= nodes; i++)
            {
                string nodeDir = Path.Combine(dir, $"node{i}");
                Directory.CreateDirectory(Path.Combine(nodeDir, "sockets"));
                string device = $"{Path.Combine(nodeDir, "dev0.img")}:{size.ToString(CultureInfo.InvariantCulture)}";
                string log = Path.Combine(dir, $"node{i}.log");
                output.WriteLine($"starting node{i} (log {log})");
                started.Add((Launch(host, "hci-hosttype", ["--etcd", url, "--node", $"node{i}", "--listen", $"127.0.0.1:{FreePort()}", "--domain", $"host{i}", "--device", device, "--cluster-key-file", key, "--socket-dir", Path.Combine(nodeDir, "sockets")], log), "hci-hosttype"));
                WritePids(dir, started);
            }

            await WaitForNodesAsync(url, nodes, dir, started, output).ConfigureAwait(false);
        }
        catch
        {
            output.WriteLine("start failed: stopping what was started.");
            Stop(dir, started, TextWriter.Null);
            throw;
        }

        string sock = Path.Combine(dir, "node1", "sockets", "vol1.sock");
        output.WriteLine($"""

            Hci dev cluster up: {nodes} nodes (node1..node{nodes}, failure domains host1..host{nodes}), etcd at {url}.
            Create a volume and attach it to a node:
              hci --etcd {url} volume create vol1 --size 1G --replicas {Math.Min(3, nodes)}
              hci --etcd {url} volume attach vol1 --node node1
            Within a second node1 serves it as a vhost-user-blk socket: {sock}
            Drive it with hci-bench:
              hci-bench --ioengine=vhost-user --filename={sock} --rw=randwrite --bs=4k --iodepth=32 --runtime=10s --time_based --name=try
            or give it to QEMU (guest memory must be shared):
              qemu-system-x86_64 -m 2G -object memory-backend-memfd,id=mem,size=2G,share=on -numa node,memdev=mem \
                -chardev socket,id=vol1,path={sock} -device vhost-user-blk-pci,chardev=vol1 ...
            Watch it:  hci --etcd {url} cluster status;  hci --etcd {url} volume status vol1
            Logs: {dir}/node*.log, {dir}/etcd.log.  Stop it: hci dev down --dir {dir}
            """);
        return 0;
    }

    public static int Down(string dir, TextWriter output)
    {
        dir = Path.GetFullPath(dir);
        var pids = ReadPids(dir);
        if (pids.Count == 0)
        {
            output.WriteLine($"no dev cluster was started in {dir} (no {Path.Combine(dir, PidsName)}).");
            return 0;
        }

        Stop(dir, pids, output);
        output.WriteLine($"the data stays in {dir} (hci dev up --dir {dir} starts on it again; remove the directory to start afresh).");
        return 0;
    }

    /// <summary>Generates a cluster key file (mode 0600).</summary>
    public static int Key(string path, TextWriter output)
    {
        try
        {
            Hci.Transport.Replication.ClusterKey.Generate(path);
        }
        catch (IOException ex)
        {
            throw new DevException($"cannot write {path}: {ex.Message} (an existing key is never overwritten).");
        }

        output.WriteLine($"wrote a new cluster key to {path} (mode 0600): give it to every node with --cluster-key-file {path}.");
        return 0;
    }

    /// <summary>Stops the nodes, then etcd: SIGTERM, then SIGKILL past the deadline; a pid whose command line is no
    /// longer the program recorded is left alone (it ended, and the pid went to another process).</summary>
    private static void Stop(string dir, IReadOnlyList<(int Pid, string Name)> processes, TextWriter output)
    {
        StopAll(processes.Where(p => p.Name != "etcd").ToList(), output);
        StopAll(processes.Where(p => p.Name == "etcd").ToList(), output);
        File.Delete(Path.Combine(dir, PidsName));
    }

    private static void StopAll(List<(int Pid, string Name)> processes, TextWriter output)
    {
        var running = new List<(int Pid, string Name)>();
        foreach (var (pid, name) in processes)
        {
            if (IsRunning(pid, name))
            {
                running.Add((pid, name));
                Kill(pid, Sigterm);
            }
            else
            {
                output.WriteLine($"{name} pid {pid}: not running.");
            }
        }

        var watch = Stopwatch.StartNew();
        foreach (var (pid, name) in running)
        {
            while (IsRunning(pid, name) && watch.Elapsed < StopDeadline)
            {
                Thread.Sleep(50); // polling another session's process: no handle to wait on
            }

            if (IsRunning(pid, name))
            {
                Kill(pid, Sigkill);
                output.WriteLine($"stopped {name} pid {pid} (SIGKILL: it did not stop within {StopDeadline.TotalSeconds:0} s of SIGTERM).");
            }
            else
            {
                output.WriteLine($"stopped {name} pid {pid}.");
            }
        }
    }

    private const int Sigterm = 15;
    private const int Sigkill = 9;

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);

    /// <summary>Whether <paramref name="pid"/> runs <paramref name="name"/> (its /proc/PID/cmdline names it) and is not a zombie.</summary>
    internal static bool IsRunning(int pid, string name)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            int close = stat.LastIndexOf(')');
            if (close < 0 || stat.AsSpan(close + 1).TrimStart().StartsWith("Z"))
            {
                return false;
            }

            string[] args = File.ReadAllText($"/proc/{pid}/cmdline").Split('\0', StringSplitOptions.RemoveEmptyEntries);
            return args.Take(2).Any(a => Path.GetFileName(a) == name || Path.GetFileName(a) == name + ".dll");
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>Starts a program in a session of its own (setsid), output to <paramref name="log"/>, input from
    /// /dev/null: it outlives hci and a Ctrl-C in hci's terminal. setsid and sh exec in place, so the pid is the program's.</summary>
    private static int Launch(string program, string name, IReadOnlyList<string> args, string log)
    {
        var psi = new ProcessStartInfo("setsid") { UseShellExecute = false };
        foreach (string arg in new[] { "sh", "-c", "exec \"$0\" \"$@\" >>\"$HCI_DEV_LOG\" 2>&1 </dev/null" })
        {
            psi.ArgumentList.Add(arg);
        }

        if (program.EndsWith(".dll", StringComparison.Ordinal))
        {
            psi.ArgumentList.Add(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet");
        }

        psi.ArgumentList.Add(program);
        foreach (string arg in args)
        {
            psi.ArgumentList.Add(arg);
        }

        psi.Environment["HCI_DEV_LOG"] = log;
        using var process = Process.Start(psi) ?? throw new DevException($"cannot start {program}.");
        var watch = Stopwatch.StartNew();
        while (!IsRunning(process.Id, name))
        {
            // setsid and sh have not exec'd the program yet (or it failed to start).
            if (process.HasExited || watch.Elapsed > StartDeadline)
            {
                throw new DevException($"{program} did not start: see {log}:{Environment.NewLine}{Tail(log)}");
            }

            Thread.Sleep(10);
        }

        return process.Id;
    }

    private static async Task WaitForPortAsync(int port, (int Pid, string Name) process, string log)
    {
        var watch = Stopwatch.StartNew();
        while (true)
        {
            try
            {
                using var client = new TcpClient();
                await client.ConnectAsync(IPAddress.Loopback, port).ConfigureAwait(false);
                return;
            }
            catch (SocketException)
            {
            }

            if (!IsRunning(process.Pid, process.Name))
            {
                throw new DevException($"{process.Name} exited: see {log}:{Environment.NewLine}{Tail(log)}");
            }

            if (watch.Elapsed > StartDeadline)
            {
                throw new DevException($"{process.Name} did not listen on 127.0.0.1:{port} within {StartDeadline.TotalSeconds:0} s: see {log}.");
            }

            await Task.Delay(100).ConfigureAwait(false);
        }
    }

    private static async Task WaitForNodesAsync(string url, int nodes, string dir, List<(int Pid, string Name)> started, TextWriter output)
    {
        var options = new Hci.Cluster.EtcdClusterStoreOptions { Endpoints = [url] };
        await using var store = await Hci.Cluster.EtcdClusterStore.ConnectAsync(options).ConfigureAwait(false);
        var catalog = new ClusterCatalog(store);
        var watch = Stopwatch.StartNew();
        int last = -1;
        while (true)
        {
            var map = await catalog.GetMapAsync().ConfigureAwait(false);
            int up = map.Nodes.Count(n => n.Alive);
            if (up != last)
            {
                output.WriteLine($"waiting for the nodes: {up} of {nodes} up");
                last = up;
            }

            if (up >= nodes)
            {
                return;
            }

            for (int i = 1; i < started.Count; i++)
            {
                if (!IsRunning(started[i].Pid, started[i].Name))
                {
                    string log = Path.Combine(dir, $"node{i}.log");
                    throw new DevException($"node{i} exited: see {log}:{Environment.NewLine}{Tail(log)}");
                }
            }

            if (watch.Elapsed > StartDeadline)
            {
                throw new DevException($"only {up} of {nodes} nodes came up within {StartDeadline.TotalSeconds:0} s: see {dir}/node*.log.");
            }

            await Task.Delay(250).ConfigureAwait(false);
        }
    }

    private static string Tail(string log)
    {
        try
        {
            return string.Join(Environment.NewLine, File.ReadLines(log).TakeLast(10));
        }
        catch (IOException)
        {
            return "(no log)";
        }
    }

    private static string FindHostType()
    {
        string? fromEnv = Environment.GetEnvironmentVariable("HCI_HOSTTYPE");
        if (!string.IsNullOrEmpty(fromEnv))
        {
            return File.Exists(fromEnv) ? fromEnv : throw new DevException($"HCI_HOSTTYPE={fromEnv} does not exist.");
        }

        string self = AppContext.BaseDirectory;
        foreach (string candidate in new[] { Path.Combine(self, "hosttype", "hci-hosttype"), Path.Combine(self, "hosttype", "hci-hosttype.dll"), Path.Combine(self, "hci-hosttype"), Path.Combine(self, "hci-hosttype.dll") })
        {
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        return FindOnPath("hci-hosttype") ?? throw new DevException($"hci-hosttype was not found (looked in {Path.Combine(self, "hosttype")}, {self} and the PATH): build samples/Hci.Cli, which copies it, or set HCI_HOSTTYPE to its path.");
    }

    private static string? FindOnPath(string name)
    {
        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? string.Empty).Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            string path = Path.Combine(dir, name);
            if (File.Exists(path))
            {
                return path;
            }
        }

        return null;
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    private static void WritePids(string dir, List<(int Pid, string Name)> processes) =>
        File.WriteAllLines(Path.Combine(dir, PidsName), processes.Select(p => $"{p.Pid.ToString(CultureInfo.InvariantCulture)} {p.Name}"));

    private static List<(int Pid, string Name)> ReadPids(string dir)
    {
        string path = Path.Combine(dir, PidsName);
        if (!File.Exists(path))
        {
            return [];
        }

        var list = new List<(int, string)>();
        foreach (string line in File.ReadAllLines(path))
        {
            string[] parts = line.Split(' ', 2, StringSplitOptions.TrimEntries);
            if (parts.Length == 2 && int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int pid) && pid > 1)
            {
                list.Add((pid, parts[1]));
            }
        }

        return list;
    }
}

/// <summary>A dev-cluster command failed; the message says why and what to do.</summary>
internal sealed class DevException(string message) : Exception(message);
