using System.Security.Authentication;
using System.Security.Cryptography;
using System.Text;

namespace Hci.Transport.Replication;

/// <summary>
/// The challenge-response at connect: both sides send fresh 32-byte nonces and each proves it holds the cluster key
/// with HMAC-SHA256(key, role || client nonce || server nonce || client id || server id), compared in constant time.
/// The server proves itself first (in its Challenge), the client then (Proof), and the server's Welcome opens the
/// connection for requests. A recorded exchange is worthless on another connection (the other side's nonce is new);
/// a proof cannot be reflected (the role is in it). Runs on the thread pool, on the connection's stream (TLS or not),
/// before the connection reaches a reactor; the frames are the protocol's, read with exact lengths so that no byte
/// after the handshake is taken from the socket.
/// </summary>
internal static class ReplicaHandshake
{
    public const int NonceLength = 32;
    public const int ProofLength = 32;
    public const int MaxNodeIdBytes = 255;
    public const int MaxData = NonceLength + 1 + MaxNodeIdBytes + ProofLength;

    private static readonly byte[] s_clientRole = "hci-replica client"u8.ToArray();
    private static readonly byte[] s_serverRole = "hci-replica server"u8.ToArray();

    /// <summary>Authenticates as the client; throws when the server does not prove the key or is another node.</summary>
    /// <returns>When the server welcomed the connection.</returns>
    public static async Task ClientAsync(Stream stream, byte[] key, string localNode, string serverNode, CancellationToken token)
    {
        byte[] clientId = Id(localNode);
        byte[] clientNonce = RandomNumberGenerator.GetBytes(NonceLength);
        await SendAsync(stream, ReplicaFrameKind.Hello, [.. clientNonce, (byte)clientId.Length, .. clientId], token).ConfigureAwait(false);
        byte[] challenge = await ReceiveAsync(stream, ReplicaFrameKind.Challenge, token).ConfigureAwait(false);
        if (challenge.Length < NonceLength + 1 + ProofLength || challenge.Length != NonceLength + 1 + challenge[NonceLength] + ProofLength)
        {
            throw new AuthenticationException("the server's challenge is malformed");
        }

        byte[] serverNonce = challenge[..NonceLength];
        byte[] serverId = challenge[(NonceLength + 1)..^ProofLength];
        if (!serverId.AsSpan().SequenceEqual(Id(serverNode)))
        {
            throw new AuthenticationException($"the server is node '{Encoding.UTF8.GetString(serverId)}', not '{serverNode}'");
        }

        byte[] expected = Prove(key, s_serverRole, clientNonce, serverNonce, clientId, serverId);
        if (!CryptographicOperations.FixedTimeEquals(expected, challenge.AsSpan(challenge.Length - ProofLength)))
        {
            throw new AuthenticationException("the server does not hold the cluster key");
        }

        await SendAsync(stream, ReplicaFrameKind.Proof, Prove(key, s_clientRole, clientNonce, serverNonce, clientId, serverId), token).ConfigureAwait(false);
        byte[] welcome = await ReceiveAsync(stream, ReplicaFrameKind.Welcome, token).ConfigureAwait(false);
        if (welcome.Length != 0)
        {
            throw new AuthenticationException("the server's welcome is malformed");
        }
    }

    /// <summary>Authenticates a client; throws when it does not prove the key (nothing else is answered then).</summary>
    /// <returns>The client's node id.</returns>
    public static async Task<string> ServerAsync(Stream stream, byte[] key, string localNode, CancellationToken token)
    {
        byte[] hello = await ReceiveAsync(stream, ReplicaFrameKind.Hello, token).ConfigureAwait(false);
        if (hello.Length < NonceLength + 1 || hello.Length != NonceLength + 1 + hello[NonceLength])
        {
            throw new AuthenticationException("the client's hello is malformed");
        }

        byte[] clientNonce = hello[..NonceLength];
        byte[] clientId = hello[(NonceLength + 1)..];
        byte[] serverId = Id(localNode);
        byte[] serverNonce = RandomNumberGenerator.GetBytes(NonceLength);
        byte[] proof = Prove(key, s_serverRole, clientNonce, serverNonce, clientId, serverId);
        await SendAsync(stream, ReplicaFrameKind.Challenge, [.. serverNonce, (byte)serverId.Length, .. serverId, .. proof], token).ConfigureAwait(false);
        byte[] answer = await ReceiveAsync(stream, ReplicaFrameKind.Proof, token).ConfigureAwait(false);
        byte[] expected = Prove(key, s_clientRole, clientNonce, serverNonce, clientId, serverId);
        if (answer.Length != ProofLength || !CryptographicOperations.FixedTimeEquals(expected, answer))
        {
            throw new AuthenticationException("the client does not hold the cluster key");
        }

        await SendAsync(stream, ReplicaFrameKind.Welcome, [], token).ConfigureAwait(false);
        return Encoding.UTF8.GetString(clientId);
    }

    internal static byte[] Prove(byte[] key, byte[] role, byte[] clientNonce, byte[] serverNonce, byte[] clientId, byte[] serverId)
    {
        // Lengths before the ids, so that no two (client, server) pairs hash the same bytes.
        byte[] message = [.. role, .. clientNonce, .. serverNonce, (byte)clientId.Length, .. clientId, (byte)serverId.Length, .. serverId];
        return HMACSHA256.HashData(key, message);
    }

    private static byte[] Id(string node)
    {
        byte[] id = Encoding.UTF8.GetBytes(node);
        if (id.Length is 0 or > MaxNodeIdBytes)
        {
            throw new ArgumentException($"A node id is 1 to {MaxNodeIdBytes} UTF-8 bytes; '{node}' is {id.Length}.", nameof(node));
        }

        return id;
    }

    private static async Task SendAsync(Stream stream, ReplicaFrameKind kind, byte[] data, CancellationToken token)
    {
        using var writer = new ReplicaFrameWriter(MaxData);
        var header = new ReplicaFrameHeader { Kind = kind, Length = data.Length };
        writer.TryQueue(header, data);
        byte[] bytes = new byte[writer.Pending];
        writer.Drain(bytes);
        await stream.WriteAsync(bytes, token).ConfigureAwait(false);
        await stream.FlushAsync(token).ConfigureAwait(false);
    }

    private static async Task<byte[]> ReceiveAsync(Stream stream, ReplicaFrameKind kind, CancellationToken token)
    {
        using var reader = new ReplicaFrameReader(MaxData) { AllowedKinds = ReplicaFrameReader.KindBit(kind) };
        byte[] header = new byte[ReplicaFrameHeader.Size];
        await stream.ReadExactlyAsync(header, token).ConfigureAwait(false);
        reader.Append(header);
        int length = Peek(reader, out _);
        if (length > 0)
        {
            byte[] payload = new byte[length];
            await stream.ReadExactlyAsync(payload, token).ConfigureAwait(false);
            reader.Append(payload);
        }

        if (Peek(reader, out byte[]? data) != 0 || data == null)
        {
            throw new AuthenticationException("a handshake frame is incomplete");
        }

        return data;
    }

    // Payload bytes still to read (0 when the frame is whole: then its data comes out, checked).
    private static unsafe int Peek(ReplicaFrameReader reader, out byte[]? data)
    {
        data = null;
        switch (reader.TryPeek(out var frame))
        {
            case ReplicaReadStatus.Frame:
                if (!frame.DataIntact)
                {
                    throw new AuthenticationException("a handshake frame's checksum does not match");
                }

                data = new ReadOnlySpan<byte>(frame.Data, frame.DataLength).ToArray();
                return 0;
            case ReplicaReadStatus.NeedMore:
                return reader.Missing;
            default:
                throw new AuthenticationException($"a malformed frame during the handshake ({reader.Error})");
        }
    }
}
