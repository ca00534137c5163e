using System.Net.Security;
using System.Net.Sockets;
using Hci.Core.Blocks;
using Tmds.Linux;

namespace Hci.Transport.Replication;

/// <summary>
/// Carries a TLS connection's plaintext to a reactor: an <see cref="SslStream"/> cannot be driven by non-blocking
/// <c>recv</c>/<c>send</c> on a reactor thread, so two pumps on the thread pool move bytes between it and one end of a
/// Unix socket pair, and the reactor serves the other end exactly as it serves a plain TCP socket. The cost is two
/// more copies and a thread hop per batch of frames (measured in the protocol tests, see docs/cluster.md).
/// </summary>
internal sealed class ReplicaTlsRelay : IDisposable
{
    private const int BufferSize = 256 * 1024;
    private readonly SslStream _tls;
    private readonly Socket _pumpEnd;
    private int _closed;

    private ReplicaTlsRelay(SslStream tls, Socket pumpEnd)
    {
        _tls = tls;
        _pumpEnd = pumpEnd;
    }

    /// <summary>Starts relaying; returns the socket the reactor serves.</summary>
    public static unsafe Socket Start(SslStream tls, out ReplicaTlsRelay relay)
    {
        int* pair = stackalloc int[2];
        if (LibC.socketpair(LibC.AF_UNIX, LibC.SOCK_STREAM | LibC.SOCK_CLOEXEC, 0, pair) != 0)
        {
            throw new IOException($"socketpair failed: {Errno.Describe(LibC.errno)}");
        }

        var reactorEnd = new Socket(new SafeSocketHandle(pair[0], ownsHandle: true));
        var pumpEnd = new Socket(new SafeSocketHandle(pair[1], ownsHandle: true));
        relay = new ReplicaTlsRelay(tls, pumpEnd);
        _ = relay.InboundAsync();
        _ = relay.OutboundAsync();
        return reactorEnd;
    }

    /// <summary>Stops both pumps and closes the TLS connection.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _closed, 1) != 0)
        {
            return;
        }

        try
        {
            _pumpEnd.Shutdown(SocketShutdown.Both);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
        }

        _pumpEnd.Dispose();
        _tls.Dispose();
    }

    private async Task InboundAsync()
    {
        byte[] buffer = new byte[BufferSize];
        try
        {
            while (true)
            {
                int n = await _tls.ReadAsync(buffer).ConfigureAwait(false);
                if (n == 0)
                {
                    break;
                }

                for (int sent = 0; sent < n;)
                {
                    sent += await _pumpEnd.SendAsync(buffer.AsMemory(sent, n - sent), SocketFlags.None).ConfigureAwait(false);
                }
            }
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException or InvalidOperationException)
        {
        }
        finally
        {
            Dispose();
        }
    }

    private async Task OutboundAsync()
    {
        byte[] buffer = new byte[BufferSize];
        try
        {
            while (true)
            {
                int n = await _pumpEnd.ReceiveAsync(buffer, SocketFlags.None).ConfigureAwait(false);
                if (n == 0)
                {
                    break;
                }

                await _tls.WriteAsync(buffer.AsMemory(0, n)).ConfigureAwait(false);
            }
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException or InvalidOperationException)
        {
        }
        finally
        {
            Dispose();
        }
    }
}
