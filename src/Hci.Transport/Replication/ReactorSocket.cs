using System.Net.Sockets;
using Tmds.Linux;

namespace Hci.Transport.Replication;

/// <summary>Hands a connected socket to a reactor without .NET's own socket engine behind it.</summary>
internal static class ReactorSocket
{
    /// <summary>
    /// A socket that was used with async I/O (the connect, the handshake) is registered with .NET's socket engine,
    /// whose epoll thread then queues a thread-pool work item on every event the socket raises, although the reactor
    /// reads and writes it itself: one work item per replica request was counted (dotnet-counters). The reactor gets a
    /// duplicate descriptor in a fresh <see cref="Socket"/> that no async call ever touched, and the original is
    /// closed, which takes it out of the engine.
    /// </summary>
    /// <param name="socket">The connected socket, used asynchronously so far; closed on success.</param>
    /// <returns>The socket for the reactor (the original when the descriptor cannot be duplicated).</returns>
    public static unsafe Socket Detach(Socket socket)
    {
        int fd = (int)socket.Handle;
        int copy = LibC.fcntl(fd, LibC.F_DUPFD_CLOEXEC, 0);
        if (copy < 0)
        {
            return socket;
        }

        Socket fresh;
        try
        {
            fresh = new Socket(new SafeSocketHandle(copy, ownsHandle: true));
        }
        catch (SocketException)
        {
            LibC.close(copy);
            return socket;
        }

        fresh.NoDelay = true;
        socket.Dispose();
        return fresh;
    }
}
