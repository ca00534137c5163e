using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Hci.Core.Replication;
using Hci.Transport.Replication;
using static Hci.Testing.Deadline;
using static Hci.Transport.Tests.Replication.ReplicaTestKit;

namespace Hci.Transport.Tests.Replication;

/// <summary>
/// Authentication: a client with another key is refused and nothing it sends reaches a replica; a recorded handshake
/// replayed on a new connection is refused; a silent peer is dropped at the handshake deadline; the key file must be
/// mode 0600; TLS carries the same protocol end to end, trusting a pinned certificate.
/// </summary>
public sealed class ReplicaAuthTests
{
    [Fact]
    public async Task AClientWithAnotherKeyIsRefusedAndReachesNothing()
    {
        var local = new CountingConnector(CreateLocalNode());
        await using var server = StartServer(local, NewKey());
        using var connector = Connector(server, NewKey(), o => o.ReconnectDelay = TimeSpan.FromMilliseconds(20));
        using var channel = connector.Open("node-b", reactor: null);
        WaitUntil(() =>
        {
            channel.Poll();
            return server.HandshakesRefused >= 3;
        }, "three refused attempts");
        using var io = new Io(4096);
        Assert.Equal(ReplicaStatus.Unavailable, Run(channel, io.Make(ReplicaOperation.Write)));
        Assert.False(channel.IsConnected);
        Assert.Equal(0, local.Requests);
    }

    [Fact]
    public async Task AServerThatIsNotTheNodeAskedForIsRefusedByTheClient()
    {
        byte[] key = NewKey();
        await using var server = StartServer(CreateLocalNode(), key, o => o.NodeId = "node-z");
        using var connector = Connector(server, key);
        using var channel = connector.Open("node-b", reactor: null);
        WaitUntil(() =>
        {
            channel.Poll();
            return server.HandshakesRefused >= 1;
        }, "a refused attempt");
        Assert.False(channel.IsConnected);
    }

    [Fact]
    public async Task AReplayedHandshakeIsRefused()
    {
        byte[] key = NewKey();
        var local = new CountingConnector(CreateLocalNode());
        await using var server = StartServer(local, key);
        var endpoint = new IPEndPoint(IPAddress.Loopback, server.LocalEndPoint.Port);

        // A genuine client's handshake, recorded as it leaves the client.
        byte[] sent;
        using (var genuine = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            await genuine.ConnectAsync(endpoint);
            var recording = new RecordingStream(new NetworkStream(genuine));
            await ReplicaHandshake.ClientAsync(recording, key, "node-a", "node-b", CancellationToken.None);
            sent = recording.Written.ToArray();
        }

        // Replayed whole on a new connection: the server's nonce is new, so the recorded proof is wrong.
        using var replay = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await replay.ConnectAsync(endpoint);
        await replay.SendAsync(sent);
        byte[] answer = new byte[4096];
        int total = 0;
        while (true)
        {
            int n = await replay.ReceiveAsync(answer.AsMemory(total));
            if (n == 0)
            {
                break;
            }

            total += n;
        }

        // Only the server's challenge came back (one frame), never a welcome; then the server closed.
        Assert.Equal(1, answer[3] == 4 ? 1 : 0);
        Assert.True(total < 64 + 320 + 64, $"{total} bytes");
        WaitUntil(() => server.HandshakesRefused >= 1, "the refusal");
        Assert.Equal(0, local.Requests);
    }

    [Fact]
    public async Task ASilentPeerIsDroppedAtTheHandshakeDeadline()
    {
        await using var server = StartServer(CreateLocalNode(), NewKey(), o => o.HandshakeTimeout = TimeSpan.FromMilliseconds(300));
        using var silent = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await silent.ConnectAsync(new IPEndPoint(IPAddress.Loopback, server.LocalEndPoint.Port));
        var watch = System.Diagnostics.Stopwatch.StartNew();
        int n = await silent.ReceiveAsync(new byte[16]).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(0, n);
        Assert.True(watch.Elapsed >= TimeSpan.FromMilliseconds(250), $"closed after {watch.ElapsedMilliseconds} ms");
        WaitUntil(() => server.ConnectionCount == 0, "the connection to be counted out");
    }

    [Fact]
    public void AKeyFileOthersMayReadIsRefusedWithTheCommandThatFixesIt()
    {
        string dir = Directory.CreateTempSubdirectory("hci-key").FullName;
        try
        {
            string path = Path.Combine(dir, "cluster.key");
            ClusterKey.Generate(path);
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(path));
            Assert.Equal(ClusterKey.DefaultLength, ClusterKey.Load(path).Length);
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead);
            var e = Assert.Throws<UnauthorizedAccessException>(() => ClusterKey.Load(path));
            Assert.Contains($"chmod 600 {path}", e.Message, StringComparison.Ordinal);
            var server = Assert.Throws<UnauthorizedAccessException>(() => new ReplicaServer(new ReplicaServerOptions { NodeId = "n", Listen = "127.0.0.1:0", KeyFile = path }, CreateLocalNode()));
            Assert.Contains("chmod 600", server.Message, StringComparison.Ordinal);
            Assert.Throws<IOException>(() => ClusterKey.Generate(path)); // never overwrites a key
            File.WriteAllBytes(Path.Combine(dir, "short.key"), new byte[8]);
            File.SetUnixFileMode(Path.Combine(dir, "short.key"), UnixFileMode.UserRead | UnixFileMode.UserWrite);
            Assert.Throws<InvalidDataException>(() => ClusterKey.Load(Path.Combine(dir, "short.key")));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void OptionsAreCheckedWithMessagesThatSayWhatToSet()
    {
        var local = CreateLocalNode();
        Assert.Contains("NodeId", Assert.Throws<ArgumentException>(() => new ReplicaServer(new ReplicaServerOptions { Key = NewKey() }, local)).Message, StringComparison.Ordinal);
        Assert.Contains("KeyFile", Assert.Throws<ArgumentException>(() => new ReplicaServer(new ReplicaServerOptions { NodeId = "n" }, local)).Message, StringComparison.Ordinal);
        Assert.Contains("Listen", Assert.Throws<ArgumentException>(() => new ReplicaServer(new ReplicaServerOptions { NodeId = "n", Key = NewKey(), Listen = "nowhere" }, local)).Message, StringComparison.Ordinal);
        Assert.Contains("MaxBufferedBytesPerConnection", Assert.Throws<ArgumentException>(() => new ReplicaServer(new ReplicaServerOptions { NodeId = "n", Key = NewKey(), MaxBufferedBytesPerConnection = 4096 }, local)).Message, StringComparison.Ordinal);
        Assert.Contains("Resolve or Addresses", Assert.Throws<ArgumentException>(() => new RemoteReplicaConnector(new RemoteReplicaConnectorOptions { NodeId = "a", Key = NewKey() })).Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task TlsCarriesTheProtocolToAPinnedServerCertificate()
    {
        string dir = Directory.CreateTempSubdirectory("hci-tls").FullName;
        try
        {
            string pfx = Path.Combine(dir, "server.pfx");
            using var ecdsa = ECDsa.Create(ECCurve.NamedCurves.nistP256);
            var request = new CertificateRequest("CN=node-b", ecdsa, HashAlgorithmName.SHA256);
            using var cert = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
            await File.WriteAllBytesAsync(pfx, cert.Export(X509ContentType.Pfx));
            string thumbprint = Convert.ToHexString(cert.GetCertHash(HashAlgorithmName.SHA256));

            byte[] key = NewKey();
            await using var server = StartServer(CreateLocalNode(), key, o => o.TlsCertificateFile = pfx);
            using var connector = Connector(server, key, o =>
            {
                o.Tls = true;
                o.TlsPinnedThumbprint = thumbprint;
            });
            using var channel = connector.Open("node-b", reactor: null);
            WaitConnected(channel);
            using var io = new Io(64 * 1024);
            Random.Shared.NextBytes(io.Data);
            byte[] written = io.Data.ToArray();
            Assert.Equal(ReplicaStatus.Ok, Run(channel, io.Make(ReplicaOperation.Write)));
            io.Data.Clear();
            Assert.Equal(ReplicaStatus.Ok, Run(channel, io.Make(ReplicaOperation.Read)));
            Assert.True(io.Data.SequenceEqual(written));

            // A client pinning another certificate never connects.
            using var wrong = Connector(server, key, o =>
            {
                o.Tls = true;
                o.TlsPinnedThumbprint = new string('0', 64);
            });
            using var refused = wrong.Open("node-b", reactor: null);
            WaitUntil(() =>
            {
                refused.Poll();
                return server.HandshakesRefused >= 1;
            }, "the refused TLS handshake");
            Assert.False(refused.IsConnected);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private sealed class RecordingStream(Stream inner) : Stream
    {
        public MemoryStream Written { get; } = new();

        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => true;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override void Flush() => inner.Flush();

        public override int Read(byte[] buffer, int offset, int count) => inner.Read(buffer, offset, count);

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) => inner.ReadAsync(buffer, cancellationToken);

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count)
        {
            Written.Write(buffer, offset, count);
            inner.Write(buffer, offset, count);
        }

        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            Written.Write(buffer.Span);
            return inner.WriteAsync(buffer, cancellationToken);
        }
    }
}
