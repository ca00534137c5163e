using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Hci.Cluster.Scenarios;

/// <summary>
/// The fault rig itself, without a cluster: network namespaces whose links are cut and restored, clean-up of what a
/// crashed run left, and the fault proxy's delay, stall and cut. Quick, so that a partition test that fails points at
/// the cluster, not at the rig.
/// </summary>
public sealed class FaultRigTests
{
    private const int Port = 9000;

    [Fact]
    public async Task CutAndIsolatedLinksDropPacketsBothWaysUntilHealed()
    {
        using var network = NetworkNamespaces.Create();
        var a = network.Add("a");
        var b = network.Add("b");
        var c = network.Add("c");
        using var serverB = StartServer(b);
        using var serverC = StartServer(c);
        await WaitReachableAsync(null, b);
        await WaitReachableAsync(null, c);

        Assert.True(Reaches(a, b), "a does not reach b before any cut");
        network.Cut("a", "b");
        Assert.False(Reaches(a, b), $"a still reaches b across a cut\n{network.Rules("a")}");
        Assert.True(Reaches(c, b), "c lost b when only a-b was cut");
        Assert.True(Reaches(null, b), "the test lost b when only a-b was cut");
        network.Heal("a", "b");
        Assert.True(Reaches(a, b), "a does not reach b after healing");

        network.Isolate("b");
        Assert.False(Reaches(a, b), "a reaches an isolated b");
        Assert.False(Reaches(c, b), "c reaches an isolated b");
        Assert.False(Reaches(null, b), "the test reaches an isolated b");
        Assert.True(Reaches(a, c), "a lost c when only b was isolated");
        network.Rejoin("b");
        Assert.True(Reaches(c, b), "c does not reach b after it rejoined");
        Assert.Equal("none", network.Describe());
    }

    [Fact]
    public void WhatACrashedRunLeftIsRemovedAndDisposingLeavesNothing()
    {
        // A process that has exited stands for a test host that crashed with its rig up.
        using var gone = Process.Start("true")!;
        gone.WaitForExit();
        string stale = $"hct{Base36(gone.Id)}-1";
        Assert.False(Directory.Exists($"/proc/{gone.Id}"));
        Run("ip", "netns", "add", $"{stale}-node1");
        Run("ip", "link", "add", $"{stale}b", "type", "bridge");
        string mine;
        using (var network = NetworkNamespaces.Create())
        {
            Assert.DoesNotContain($"{stale}-node1", Run("ip", "netns", "list"), StringComparison.Ordinal);
            Assert.DoesNotContain($"{stale}b", Run("ip", "-o", "link", "show"), StringComparison.Ordinal);
            network.Add("x");
            mine = network.Hosts[0].Namespace;
            Assert.Contains(mine, Run("ip", "netns", "list"), StringComparison.Ordinal);
            Assert.Contains(network.Bridge, Run("ip", "-o", "link", "show"), StringComparison.Ordinal);
        }

        Assert.DoesNotContain(mine, Run("ip", "netns", "list"), StringComparison.Ordinal);
        Assert.DoesNotContain(mine.Split('-')[0] + "-", Run("ip", "-o", "link", "show"), StringComparison.Ordinal);
    }

    [Fact]
    public async Task TheFaultProxyDelaysStallsAndCutsWhatItForwards()
    {
        using var echo = new TcpListener(IPAddress.Loopback, 0);
        echo.Start();
        using var stop = new CancellationTokenSource();
        var echoing = EchoAsync(echo, stop.Token);
        await using var proxy = FaultProxy.Start((IPEndPoint)echo.LocalEndpoint);

        using var client = await ConnectAsync(proxy);
        var plain = await RoundTripAsync(client);
        proxy.Delay = TimeSpan.FromMilliseconds(100);
        var delayed = await RoundTripAsync(client);
        Assert.True(delayed >= TimeSpan.FromMilliseconds(200), $"a round trip took {delayed.TotalMilliseconds:F0} ms through 100 ms each way ({plain.TotalMilliseconds:F0} ms without)");
        proxy.Delay = TimeSpan.Zero;

        proxy.Stall();
        await client.SendAsync(new byte[] { 1 });
        var held = client.ReceiveAsync(new byte[1]);
        Assert.False(await Deadline.CompletesWithinAsync(held, TimeSpan.FromMilliseconds(300)));
        proxy.Resume();
        Assert.Equal(1, await held.WaitAsync(TimeSpan.FromSeconds(10)));

        proxy.Cut();
        var reset = await Record.ExceptionAsync(async () =>
        {
            int n = await client.ReceiveAsync(new byte[1]).WaitAsync(TimeSpan.FromSeconds(10));
            Assert.Equal(0, n);
            throw new SocketException((int)SocketError.ConnectionReset);
        });
        Assert.IsType<SocketException>(reset);
        var refused = await Record.ExceptionAsync(async () =>
        {
            // Reset at the connect or at the first exchange, as the reset races the handshake.
            using var socket = await ConnectAsync(proxy);
            await RoundTripAsync(socket);
        });
        Assert.NotNull(refused);

        proxy.Restore();
        using var again = await ConnectAsync(proxy);
        await RoundTripAsync(again);
        await stop.CancelAsync();
        echo.Stop();
        await echoing;
    }

    private static async Task<Socket> ConnectAsync(FaultProxy proxy)
    {
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        await socket.ConnectAsync(proxy.EndPoint);
        return socket;
    }

    private static async Task<TimeSpan> RoundTripAsync(Socket socket)
    {
        var watch = Stopwatch.StartNew();
        await socket.SendAsync(new byte[] { 7 });
        var buffer = new byte[1];
        int n = await socket.ReceiveAsync(buffer).WaitAsync(TimeSpan.FromSeconds(10));
        if (n != 1 || buffer[0] != 7)
        {
            throw new IOException("the echo did not come back");
        }

        return watch.Elapsed;
    }

    private static async Task EchoAsync(TcpListener listener, CancellationToken stop)
    {
        var connections = new List<Task>();
        try
        {
            while (true)
            {
                var socket = await listener.AcceptSocketAsync(stop);
                connections.Add(Task.Run(async () =>
                {
                    using (socket)
                    {
                        var buffer = new byte[256];
                        try
                        {
                            int n;
                            while ((n = await socket.ReceiveAsync(buffer, stop)) > 0)
                            {
                                await socket.SendAsync(buffer.AsMemory(0, n), stop);
                            }
                        }
                        catch (Exception e) when (e is SocketException or OperationCanceledException)
                        {
                        }
                    }
                }));
            }
        }
        catch (Exception e) when (e is SocketException or OperationCanceledException or ObjectDisposedException)
        {
        }

        await Task.WhenAll(connections);
    }

    // A TCP server in the host's namespace that answers "ok" to every connection (python3, which CI installs).
    private static Process StartServer(NetworkHost host)
    {
        var psi = new ProcessStartInfo("ip") { UseShellExecute = false, RedirectStandardError = true };
        foreach (string arg in host.Exec.Skip(1).Concat(["python3", "-c",
            $"import socket\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('0.0.0.0', {Port}))\ns.listen(16)\nwhile True:\n    c, _ = s.accept()\n    c.sendall(b'ok')\n    c.close()\n"]))
        {
            psi.ArgumentList.Add(arg);
        }

        return Process.Start(psi)!;
    }

    private static async Task WaitReachableAsync(NetworkHost? from, NetworkHost to)
    {
        await Deadline.WaitUntilAsync(() => Reaches(from, to), $"{to.Name}'s server to answer");
    }

    // Whether a connection from `from` (null: the test's own namespace) to `to`'s server gets its "ok" within 1.5 s.
    private static bool Reaches(NetworkHost? from, NetworkHost to)
    {
        string[] client = ["python3", "-c",
            $"import socket\ns = socket.create_connection(('{to.Address}', {Port}), timeout=1.5)\ns.settimeout(1.5)\nprint(s.recv(2).decode())\n"];
        var psi = new ProcessStartInfo(from is null ? client[0] : "ip") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string arg in from is null ? client.Skip(1) : from.Exec.Skip(1).Concat(client))
        {
            psi.ArgumentList.Add(arg);
        }

        using var process = Process.Start(psi)!;
        string output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return process.ExitCode == 0 && output.Trim() == "ok";
    }

    private static string Run(params string[] command)
    {
        var psi = new ProcessStartInfo(command[0]) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string arg in command.Skip(1))
        {
            psi.ArgumentList.Add(arg);
        }

        using var process = Process.Start(psi)!;
        string output = process.StandardOutput.ReadToEnd();
        string error = process.StandardError.ReadToEnd();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, $"{string.Join(' ', command)}: {error}");
        return output;
    }

    private static string Base36(int value)
    {
        const string digits = "0123456789abcdefghijklmnopqrstuvwxyz";
        string text = "";
        do
        {
            text = digits[value % 36] + text;
            value /= 36;
        }
        while (value > 0);
        return text;
    }
}
