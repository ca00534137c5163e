using System.Net;
using System.Net.Sockets;
using Hci.Core.Replication;
using Hci.Transport.Replication;
using static Hci.Testing.Deadline;
using static Hci.Transport.Tests.Replication.ReplicaTestKit;

namespace Hci.Transport.Tests.Replication;

/// <summary>
/// Hostile peers against a replica server over real sockets: 100,000 random, mangled and boundary frames, half from
/// peers that never authenticated (they reach nothing) and half after a valid handshake (each malformed frame ends
/// that connection only). Meanwhile a good client writes and reads back; the server stays up and keeps serving it.
/// </summary>
public sealed class ReplicaHostileTests
{
    private const int FramesPerSide = 50_000;
    private const int FramesPerConnection = 100;

    [Fact]
    public async Task HundredThousandHostileFramesWithAndWithoutAuthenticationLeaveTheServerServingAGoodPeer()
    {
        byte[] key = NewKey();
        var local = new CountingConnector(CreateLocalNode());
        await using var server = StartServer(local, key, o => o.Reactors = 2);
        var endpoint = new IPEndPoint(IPAddress.Loopback, server.LocalEndPoint.Port);
        using var connector = Connector(server, key);

        // The good peer works beside the flood, on a thread of its own, and counts what it sent.
        using var stop = new CancellationTokenSource();
        long goodRequests = 0;
        var good = Task.Run(() =>
        {
            using var channel = connector.Open("node-b", reactor: null);
            WaitConnected(channel);
            using var io = new Io(4096);
            for (int round = 0; !stop.IsCancellationRequested || round < 20; round++)
            {
                io.Data.Fill((byte)round);
                Assert.Equal(ReplicaStatus.Ok, Run(channel, io.Make(ReplicaOperation.Write, volume: 1000, offset: round % 64 * 4096L)));
                io.Data.Clear();
                Assert.Equal(ReplicaStatus.Ok, Run(channel, io.Make(ReplicaOperation.Read, volume: 1000, offset: round % 64 * 4096L)));
                Assert.Equal((byte)round, io.Data[4095]);
                goodRequests += 2;
            }
        });

        // Unauthenticated: frames instead of a handshake.
        var hostile = new HostileFrames(11);
        for (int sent = 0; sent < FramesPerSide; sent += FramesPerConnection)
        {
            using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await s.ConnectAsync(endpoint);
            await SendQuietly(s, hostile, FramesPerConnection);
        }

        long beforeAuthenticated = local.Requests;
        WaitUntil(() => server.HandshakesRefused >= FramesPerSide / FramesPerConnection, "every unauthenticated peer refused");

        // Authenticated: a valid handshake, then the same kind of flood.
        for (int sent = 0; sent < FramesPerSide; sent += FramesPerConnection)
        {
            using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await s.ConnectAsync(endpoint);
            using (var stream = new NetworkStream(s, ownsSocket: false))
            {
                await ReplicaHandshake.ClientAsync(stream, key, "hostile", "node-b", CancellationToken.None);
            }

            await SendQuietly(s, hostile, FramesPerConnection);
        }

        stop.Cancel();
        await good.WaitAsync(TimeSpan.FromMinutes(2));
        Assert.True(goodRequests >= 40, $"the good peer made only {goodRequests} requests");

        // Nothing of the unauthenticated half reached the store: only the good peer's requests were counted then.
        Assert.True(beforeAuthenticated <= goodRequests, $"{beforeAuthenticated} requests reached the store, the good peer made {goodRequests}");
        Assert.True(local.Requests > goodRequests, "no authenticated hostile frame was valid enough to reach the store");

        // The server still serves, and a fresh client connects.
        using var fresh = connector.Open("node-b", reactor: null);
        WaitConnected(fresh);
        using var probe = new Io(4096);
        Assert.Equal(ReplicaStatus.Ok, Run(fresh, probe.Make(ReplicaOperation.Read, volume: 1000)));
        WaitUntil(() => server.ConnectionCount <= 1, "the hostile connections to close");
    }

    private static async Task SendQuietly(Socket socket, HostileFrames hostile, int frames)
    {
        var blob = new List<byte>(frames * 128);
        for (int i = 0; i < frames; i++)
        {
            blob.AddRange(hostile.Next());
        }

        try
        {
            await socket.SendAsync(blob.ToArray());
            socket.Shutdown(SocketShutdown.Send);

            // Read until the server closes (it answers what it accepted, then ends the connection at a malformed
            // frame or at our end of stream).
            byte[] sink = new byte[64 * 1024];
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            while (await socket.ReceiveAsync(sink, SocketFlags.None, timeout.Token) > 0)
            {
            }
        }
        catch (SocketException)
        {
            // The server dropped us mid-send: what a malformed frame earns.
        }
    }
}
