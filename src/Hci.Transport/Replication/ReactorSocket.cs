using System.Globalization;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Tmds.Linux;

namespace Hci.Transport.Replication;

/// <summary>Hands a connected socket to a reactor without .NET's own socket engine behind it.</summary>
internal static class ReactorSocket
{
    /// <summary>
    /// A socket that was used with async I/O (the connect, the handshake) is registered with .NET's socket engine,
    /// whose epoll thread then wakes on every event the socket raises, although the reactor reads and writes it
    /// itself. The reactor gets a duplicate descriptor in a fresh <see cref="Socket"/> that no async call ever touched.
    /// Closing the original does not take the socket out of the engine's epoll set: a registration lasts while any
    /// descriptor of the open file remains, and the duplicate is one. So before the original is closed, every other
    /// epoll set of this process that watches it drops it (<see cref="DropForeignWatches"/>).
    /// </summary>
    /// <param name="socket">The connected socket, used asynchronously so far; closed on success.</param>
    /// <param name="logger">Where the number of watches dropped is logged (Debug).</param>
    /// <param name="peer">The peer, for the log.</param>
    /// <returns>The socket for the reactor (the original when the descriptor cannot be duplicated).</returns>
    public static unsafe Socket Detach(Socket socket, ILogger logger, string peer)
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
        ReplicaProtocolLog.SocketDetached(logger, peer, DropForeignWatches(fd));
        socket.Dispose();
        return fresh;
    }

    /// <summary>
    /// Removes descriptor <paramref name="fd"/> from every epoll set of this process that watches it (the kernel lists
    /// them in <c>/proc/self/fdinfo</c>: <c>tfd</c>, the watched descriptor, and <c>ino</c>, its file). Measured on a
    /// 3-replica volume at QD1: without it .NET's socket thread woke once per frame on each replica connection.
    /// </summary>
    /// <param name="fd">A descriptor about to be closed while a duplicate of it lives on.</param>
    /// <returns>How many watches were removed.</returns>
    internal static unsafe int DropForeignWatches(int fd)
    {
        stat st;
        if (LibC.fstat(fd, &st) != 0)
        {
            return 0;
        }

        string tfd = fd.ToString(CultureInfo.InvariantCulture);
        string ino = ((ulong)st.st_ino).ToString("x", CultureInfo.InvariantCulture);
        int removed = 0;
        IEnumerable<string> entries;
        try
        {
            entries = Directory.EnumerateFiles("/proc/self/fdinfo");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return 0;
        }

        foreach (string path in entries)
        {
            if (!int.TryParse(Path.GetFileName(path), NumberStyles.None, CultureInfo.InvariantCulture, out int epoll) || epoll == fd)
            {
                continue;
            }

            string text;
            try
            {
                text = File.ReadAllText(path);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                continue; // closed meanwhile
            }

            if (!Watches(text, tfd, ino))
            {
                continue;
            }

            // The descriptor still names the same file here, so the kernel finds the registration by it.
            if (LibC.epoll_ctl(epoll, LibC.EPOLL_CTL_DEL, fd, null) == 0)
            {
                removed++;
            }
        }

        return removed;
    }

    /// <summary>
    /// True when the fdinfo text of an epoll descriptor has a watch of descriptor <paramref name="tfd"/> on the file
    /// with inode <paramref name="ino"/> (hex). A line: <c>tfd:       12 events:       19 data:        0  pos:0 ino:2ca9 sdev:9</c>.
    /// </summary>
    internal static bool Watches(string fdinfo, string tfd, string ino)
    {
        foreach (var line in fdinfo.AsSpan().EnumerateLines())
        {
            var rest = line.TrimStart();
            if (!rest.StartsWith("tfd:", StringComparison.Ordinal))
            {
                continue;
            }

            rest = rest[4..].TrimStart();
            int end = rest.IndexOf(' ');
            if (end <= 0 || !rest[..end].SequenceEqual(tfd))
            {
                continue;
            }

            int at = rest.IndexOf(" ino:", StringComparison.Ordinal);
            if (at < 0)
            {
                continue;
            }

            var value = rest[(at + 5)..];
            int stop = value.IndexOf(' ');
            if ((stop < 0 ? value : value[..stop]).SequenceEqual(ino))
            {
                return true;
            }
        }

        return false;
    }
}
