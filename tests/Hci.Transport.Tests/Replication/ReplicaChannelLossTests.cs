using System.Net;
using System.Net.Sockets;
using Hci.Core.Reactors;
using Hci.Core.Replication;
using Hci.Transport.Replication;
using static Hci.Testing.Deadline;
using static Hci.Transport.Tests.Replication.ReplicaTestKit;

namespace Hci.Transport.Tests.Replication;

/// <summary>
/// A channel that gives up on a connection leaves nothing behind it in the kernel: the requests it answered
/// Unavailable must never reach the replica later. The cluster's partition scenario found the case: a write queued
/// on a connection cut by a partition was retransmitted by the kernel after the links healed, landed after the
/// resync had copied its region, and left the replica stale while it was marked in sync.
/// </summary>
public sealed class ReplicaChannelLossTests
{
    [Fact]
    public async Task AChannelThatGivesUpOnAConnectionResetsItSoNothingItQueuedIsDeliveredLater()
    {
        byte[] key = NewKey();
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.ReceiveBufferSize = 4096; // the accepted socket inherits it: most of the write stays queued at the sender
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var options = new RemoteReplicaConnectorOptions { NodeId = "node-a", Key = key, RequestTimeout = TimeSpan.FromMilliseconds(300), ReconnectDelay = TimeSpan.FromSeconds(30), MaxReconnectDelay = TimeSpan.FromSeconds(30) };
        options.Addresses["node-b"] = $"127.0.0.1:{((IPEndPoint)listener.LocalEndPoint!).Port}";
        using var connector = new RemoteReplicaConnector(options);
        using var channel = connector.Open("node-b", reactor: null);

        // A peer that authenticates and then reads nothing: the write waits in the sockets' buffers, unanswered.
        using var peer = await listener.AcceptAsync().WaitAsync(TimeSpan.FromSeconds(30));
        using (var stream = new NetworkStream(peer, ownsSocket: false))
        {
            await ReplicaHandshake.ServerAsync(stream, key, "node-b", CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30));
        }

        WaitConnected(channel);
        using var io = new Io(256 * 1024);
        Assert.Equal(ReplicaStatus.Unavailable, Run(channel, io.Make(ReplicaOperation.Write)));
        Assert.False(channel.IsConnected);

        // The peer now reads what reached it: the connection must end in a reset, never in an orderly end after
        // everything the channel had queued (what a graceful close delivers, however late).
        byte[] buffer = new byte[256 * 1024];
        var error = await Assert.ThrowsAsync<SocketException>(async () =>
        {
            while (true)
            {
                int n = await peer.ReceiveAsync(buffer, SocketFlags.None).WaitAsync(TimeSpan.FromSeconds(30));
                if (n == 0)
                {
                    return;
                }

            }
        });
        Assert.Equal(SocketError.ConnectionReset, error.SocketErrorCode);
    }

    [Fact]
    public async Task OnAReactorAWriteToAPeerThatResetIsAnsweredUnavailableLaterAndNeverFromInsideSubmit()
    {
        // On a reactor, a request that finds the channel idle is sent from inside Submit; a send that fails there must
        // still answer through the queue of answers, never by calling the handler before Submit returns.
        byte[] key = NewKey();
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var options = new RemoteReplicaConnectorOptions { NodeId = "node-a", Key = key, ReconnectDelay = TimeSpan.FromSeconds(30), MaxReconnectDelay = TimeSpan.FromSeconds(30) };
        options.Addresses["node-b"] = $"127.0.0.1:{((IPEndPoint)listener.LocalEndPoint!).Port}";
        using var connector = new RemoteReplicaConnector(options);
        using var reactor = new Reactor(new ReactorOptions { Name = "hci-replica-reset-0" });
        var channel = await reactor.InvokeAsync(() => connector.Open("node-b", reactor));
        var peer = await listener.AcceptAsync().WaitAsync(TimeSpan.FromSeconds(30));
        using (var stream = new NetworkStream(peer, ownsSocket: false))
        {
            await ReplicaHandshake.ServerAsync(stream, key, "node-b", CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30));
        }

        await WaitUntilAsync(() => reactor.InvokeAsync(() => channel.IsConnected).Result, "the channel to connect");
        using var io = new Io(4096);
        var request = io.Make(ReplicaOperation.Write);
        var recorder = new Recorder();
        request.Handler = recorder;

        // The reset and the submission in one reactor call: the channel cannot have seen the reset before Submit.
        int answeredInside = await reactor.InvokeAsync(() =>
        {
            peer.LingerState = new LingerOption(true, 0);
            peer.Close();
            channel.Submit(request);
            return recorder.Count;
        });
        Assert.Equal(0, answeredInside);
        await WaitUntilAsync(() => reactor.InvokeAsync(() => recorder.Count).Result > 0, "the answer");
        Assert.Equal(1, await reactor.InvokeAsync(() => recorder.Count));
        Assert.Equal(ReplicaStatus.Unavailable, request.Status);
        await reactor.InvokeAsync(() => channel.Dispose());
    }
}
