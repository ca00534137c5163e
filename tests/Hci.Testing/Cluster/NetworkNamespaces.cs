using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace Hci.Testing;

/// <summary>
/// A private network of the test's own on this machine, for partition tests: one network namespace per host
/// (<c>ip netns add</c>), each with loopback up and a veth pair to a bridge in the root namespace, addresses on a /24
/// of 10.77.0.0/16 that no interface uses (the bridge takes .1, so the test itself, in the root namespace, reaches
/// every host). Links are cut and restored with nftables drop rules in a table of the rig's own (<c>inet hci_cut</c>)
/// inside each host's namespace. Disposing kills whatever still runs in the namespaces and deletes them, their rules
/// and the bridge, always; creating a rig first removes what an earlier run that crashed left (names carry the
/// creating process's id: <c>hct&lt;pid&gt;-&lt;n&gt;</c>).
/// </summary>
/// <remarks>Needs root and the <c>ip</c> (iproute2) and <c>nft</c> (nftables) tools; without them
/// <see cref="Create"/> throws with a message that says what to install (the tests fail, never skip). Unix sockets
/// are on the shared file system, so a client in the root namespace still reaches a host's vhost-user socket.</remarks>
public sealed partial class NetworkNamespaces : IDisposable
{
    /// <summary>The table the rig's drop rules live in, inside each host's namespace.</summary>
    public const string Table = "hci_cut";

    private const string Prefix = "hct";
    private static int _instances;
    private readonly List<NetworkHost> _hosts = [];
    private readonly HashSet<(string A, string B)> _cuts = [];
    private readonly HashSet<string> _isolated = [];
    private readonly string _name;
    private readonly string _subnet;
    private bool _disposed;

    private NetworkNamespaces(string name, string subnet)
    {
        _name = name;
        _subnet = subnet;
    }

    /// <summary>The hosts added so far.</summary>
    public IReadOnlyList<NetworkHost> Hosts => _hosts;

    /// <summary>The address of the root namespace on the rig's bridge (where the test itself is seen from).</summary>
    public string GatewayAddress => $"{_subnet}.1";

    /// <summary>The bridge's name (in the root namespace).</summary>
    public string Bridge => _name + "b";

    /// <summary>The host named <paramref name="name"/>.</summary>
    /// <param name="name">A name given to <see cref="Add"/>.</param>
    public NetworkHost this[string name] => _hosts.Single(h => h.Name == name);

    /// <summary>Checks for root and the tools, removes what crashed runs left, and creates the bridge.</summary>
    /// <returns>The rig, with no hosts yet.</returns>
    /// <exception cref="InvalidOperationException">Not root, or <c>ip</c> or <c>nft</c> is missing; the message says what to do.</exception>
    public static NetworkNamespaces Create()
    {
        if (Tmds.Linux.LibC.geteuid() != 0)
        {
            throw new InvalidOperationException("The partition tests need root (network namespaces, veth pairs, a bridge and nftables rules): run them as root, as CI (.ci/run) does.");
        }

        foreach (var (tool, package) in new[] { ("ip", "iproute2"), ("nft", "nftables") })
        {
            if (!OnPath(tool))
            {
                throw new InvalidOperationException($"The partition tests need the `{tool}` tool, which is not on PATH: install it with `apt-get install {package}` (Debian); .ci/run installs it.");
            }
        }

        RemoveStale();
        string name = string.Create(CultureInfo.InvariantCulture, $"{Prefix}{ToBase36(Environment.ProcessId)}-{ToBase36(Interlocked.Increment(ref _instances))}");
        var rig = new NetworkNamespaces(name, FreeSubnet());
        try
        {
            Run("ip", "link", "add", rig.Bridge, "type", "bridge");
            Run("ip", "addr", "add", $"{rig.GatewayAddress}/24", "dev", rig.Bridge);
            Run("ip", "link", "set", rig.Bridge, "up");
            return rig;
        }
        catch
        {
            rig.Dispose();
            throw;
        }
    }

    /// <summary>Adds a host: a namespace with loopback up and <c>eth0</c> on the bridge at the next free address.</summary>
    /// <param name="name">A short name, such as <c>node1</c> or <c>etcd2</c> (letters and digits).</param>
    /// <returns>The host.</returns>
    public NetworkHost Add(string name)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!HostName().IsMatch(name) || _hosts.Any(h => h.Name == name))
        {
            throw new ArgumentException($"'{name}' is not a new host name of letters and digits", nameof(name));
        }

        int index = _hosts.Count + 1;
        var host = new NetworkHost(name, $"{_name}-{name}", string.Create(CultureInfo.InvariantCulture, $"{_subnet}.{10 + index}"));
        string outside = Outside(index);
        Run("ip", "netns", "add", host.Namespace);
        _hosts.Add(host);
        Run("ip", "link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", host.Namespace);
        Run("ip", "link", "set", outside, "master", Bridge);
        Run("ip", "link", "set", outside, "up");
        InNamespace(host, "ip", "link", "set", "lo", "up");
        InNamespace(host, "ip", "addr", "add", $"{host.Address}/24", "dev", "eth0");
        InNamespace(host, "ip", "link", "set", "eth0", "up");
        Apply(host);
        return host;
    }

    /// <summary>Cuts the link between two hosts both ways: every packet between them is dropped (connections hang
    /// as they would on a real partition, no reset).</summary>
    /// <param name="a">One host.</param>
    /// <param name="b">The other.</param>
    public void Cut(string a, string b)
    {
        var (x, y) = Pair(a, b);
        if (_cuts.Add((x, y)))
        {
            Apply(this[x]);
            Apply(this[y]);
        }
    }

    /// <summary>Restores the link between two hosts that <see cref="Cut"/> cut.</summary>
    /// <param name="a">One host.</param>
    /// <param name="b">The other.</param>
    public void Heal(string a, string b)
    {
        var (x, y) = Pair(a, b);
        if (_cuts.Remove((x, y)))
        {
            Apply(this[x]);
            Apply(this[y]);
        }
    }

    /// <summary>Cuts a host from everyone (every other host and the root namespace, the test included): only its
    /// loopback still carries packets.</summary>
    /// <param name="name">The host.</param>
    public void Isolate(string name)
    {
        if (_isolated.Add(this[name].Name))
        {
            Apply(this[name]);
        }
    }

    /// <summary>Ends <see cref="Isolate"/> for a host (cuts of single links stay).</summary>
    /// <param name="name">The host.</param>
    public void Rejoin(string name)
    {
        if (_isolated.Remove(this[name].Name))
        {
            Apply(this[name]);
        }
    }

    /// <summary>Restores every link.</summary>
    public void HealAll()
    {
        _cuts.Clear();
        _isolated.Clear();
        foreach (var host in _hosts)
        {
            Apply(host);
        }
    }

    /// <summary>The cuts in force, for messages.</summary>
    /// <returns>Such as <c>cut node1-node3; isolated node2</c>, or <c>none</c>.</returns>
    public string Describe()
    {
        var parts = _cuts.Select(c => $"cut {c.A}-{c.B}").Concat(_isolated.Select(i => $"isolated {i}")).ToList();
        return parts.Count == 0 ? "none" : string.Join("; ", parts);
    }

    /// <summary>The rules in force in a host's namespace (<c>nft list table</c>), for messages.</summary>
    /// <param name="name">The host.</param>
    /// <returns>The table as nft prints it.</returns>
    public string Rules(string name) => InNamespace(this[name], "nft", "list", "table", "inet", Table);

    /// <summary>Kills every process left in the namespaces, deletes them (their veth pairs and rules go with them) and
    /// the bridge; never throws.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        for (int i = 0; i < _hosts.Count; i++)
        {
            // The pair goes at once with its outside end; a namespace whose name is gone can outlive it for minutes
            // in the kernel (orphaned TCP sockets of killed processes keep it until they time out), and its veth with it.
            TryRun("ip", "link", "del", Outside(i + 1));
            DeleteNamespace(_hosts[i].Namespace);
        }

        TryRun("ip", "link", "del", Bridge);
    }

    /// <summary>Runs a command in a host's namespace and returns its output; fails with its error output unless it
    /// exits with 0.</summary>
    /// <param name="host">The host.</param>
    /// <param name="command">The command and its arguments.</param>
    /// <returns>Standard output.</returns>
    public static string InNamespace(NetworkHost host, params string[] command) =>
        Run([.. host.Exec, .. command]);

    // Writes a host's whole table at once (nft -f applies a file atomically): the current cuts and isolation.
    private void Apply(NetworkHost host)
    {
        var input = new StringBuilder();
        var output = new StringBuilder();
        if (_isolated.Contains(host.Name))
        {
            input.Append("\t\tiifname != \"lo\" drop\n");
            output.Append("\t\toifname != \"lo\" drop\n");
        }

        foreach (var (a, b) in _cuts)
        {
            string? other = a == host.Name ? b : b == host.Name ? a : null;
            if (other != null)
            {
                input.Append(CultureInfo.InvariantCulture, $"\t\tip saddr {this[other].Address} drop\n");
                output.Append(CultureInfo.InvariantCulture, $"\t\tip daddr {this[other].Address} drop\n");
            }
        }

        string rules = $$"""
            table inet {{Table}}
            delete table inet {{Table}}
            table inet {{Table}} {
            	chain input {
            		type filter hook input priority 0; policy accept;
            {{input}}	}
            	chain output {
            		type filter hook output priority 0; policy accept;
            {{output}}	}
            }

            """;
        Run([.. host.Exec, "nft", "-f", "-"], rules);
    }

    private string Outside(int index) => string.Create(CultureInfo.InvariantCulture, $"{_name}v{index}");

    private (string, string) Pair(string a, string b)
    {
        string x = this[a].Name;
        string y = this[b].Name;
        if (x == y)
        {
            throw new ArgumentException("a host cannot be cut from itself");
        }

        return string.CompareOrdinal(x, y) < 0 ? (x, y) : (y, x);
    }

    // Namespaces and bridges of a process that no longer runs: a test host that crashed before it disposed its rig.
    private static void RemoveStale()
    {
        foreach (string line in Run("ip", "netns", "list").Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            string ns = line.Split(' ')[0];
            if (IsStale(ns))
            {
                DeleteNamespace(ns);
            }
        }

        foreach (string line in Run("ip", "-o", "link", "show").Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            // "12: hct1f4-1b: <BROADCAST,...> ..." (a bridge) or "13: hct1f4-1v2@if2: ..." (a veth's outside end)
            string[] fields = line.Split(':', 3);
            string link = fields.Length > 1 ? fields[1].Trim().Split('@')[0] : "";
            if (IsStale(link))
            {
                TryRun("ip", "link", "del", link);
            }
        }
    }

    private static bool IsStale(string name)
    {
        var match = RigName().Match(name);
        if (!match.Success)
        {
            return false;
        }

        long pid = FromBase36(match.Groups["pid"].Value);
        return pid != Environment.ProcessId && !Directory.Exists(string.Create(CultureInfo.InvariantCulture, $"/proc/{pid}"));
    }

    private static void DeleteNamespace(string ns)
    {
        // A namespace outlives its name while a process runs in it: kill what is left (a node or etcd that a crashed
        // test started) so that the veth pair and the rules go too.
        string pids = TryRun("ip", "netns", "pids", ns) ?? "";
        foreach (string pid in pids.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            if (int.TryParse(pid, NumberStyles.None, CultureInfo.InvariantCulture, out int id) && id != Environment.ProcessId)
            {
                _ = Tmds.Linux.LibC.kill(id, Tmds.Linux.LibC.SIGKILL);
            }
        }

        TryRun("ip", "netns", "del", ns);
    }

    // A /24 of 10.77.0.0/16 that no address or route of this machine uses (another rig, or the machine's own).
    private static string FreeSubnet()
    {
        string used = Run("ip", "-4", "-o", "addr", "show") + Run("ip", "-4", "route", "show");
        var random = new Random();
        for (int attempt = 0; attempt < 100; attempt++)
        {
            string subnet = string.Create(CultureInfo.InvariantCulture, $"10.77.{random.Next(1, 255)}");
            if (!used.Contains(subnet + ".", StringComparison.Ordinal))
            {
                return subnet;
            }
        }

        throw new InvalidOperationException($"no free /24 in 10.77.0.0/16:\n{used}");
    }

    private static bool OnPath(string tool) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "/usr/sbin:/usr/bin:/sbin:/bin").Split(':').Append("/usr/sbin").Append("/sbin")
            .Any(dir => dir.Length > 0 && File.Exists(Path.Combine(dir, tool)));

    private static string Run(params string[] command) => Run(command, null);

    private static string Run(string[] command, string? input)
    {
        var (code, output, error) = Execute(command, input);
        return code == 0 ? output : throw new InvalidOperationException($"`{string.Join(' ', command)}` exited with {code}: {error}{output}{(input is null ? "" : "\ninput:\n" + input)}");
    }

    private static string? TryRun(params string[] command)
    {
        try
        {
            var (code, output, _) = Execute(command, null);
            return code == 0 ? output : null;
        }
        catch (InvalidOperationException)
        {
            return null;
        }
    }

    private static (int Code, string Output, string Error) Execute(string[] command, string? input)
    {
        var psi = new ProcessStartInfo(command[0])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = input is not null,
            UseShellExecute = false,
        };
        foreach (string arg in command.Skip(1))
        {
            psi.ArgumentList.Add(arg);
        }

        using var process = Process.Start(psi) ?? throw new InvalidOperationException($"{command[0]} did not start");
        if (input is not null)
        {
            process.StandardInput.Write(input);
            process.StandardInput.Close();
        }

        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromSeconds(30)))
        {
            process.Kill();
            throw new InvalidOperationException($"`{string.Join(' ', command)}` did not finish within 30 s");
        }

        process.WaitForExit();
        return (process.ExitCode, output.Result, error.Result);
    }

    private static string ToBase36(long value)
    {
        const string digits = "0123456789abcdefghijklmnopqrstuvwxyz";
        var text = new StringBuilder();
        do
        {
            text.Insert(0, digits[(int)(value % 36)]);
            value /= 36;
        }
        while (value > 0);
        return text.ToString();
    }

    private static long FromBase36(string text) =>
        text.Aggregate(0L, (value, c) => checked((value * 36) + (char.IsAsciiDigit(c) ? c - '0' : c - 'a' + 10)));

    [GeneratedRegex("^hct(?<pid>[0-9a-z]{1,6})-[0-9a-z]+")]
    private static partial Regex RigName();

    [GeneratedRegex("^[a-z][a-z0-9]{0,15}$")]
    private static partial Regex HostName();
}

/// <summary>A host of a <see cref="NetworkNamespaces"/> rig: its namespace and its address on the rig's bridge.</summary>
/// <param name="Name">The name the test gave it, such as <c>node1</c>.</param>
/// <param name="Namespace">The network namespace (<c>ip netns</c>) it runs in.</param>
/// <param name="Address">Its IPv4 address on the bridge.</param>
public sealed record NetworkHost(string Name, string Namespace, string Address)
{
    /// <summary>The command prefix that runs a command in the host's namespace (<c>ip netns exec NS</c>: the command
    /// replaces <c>ip</c> in the same process, so its process id and SIGKILL are the command's own).</summary>
    public IReadOnlyList<string> Exec => ["ip", "netns", "exec", Namespace];
}
