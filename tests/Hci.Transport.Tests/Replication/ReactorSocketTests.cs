using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Hci.Transport.Replication;
using Microsoft.Extensions.Logging.Abstractions;

namespace Hci.Transport.Tests.Replication;

/// <summary>
/// <see cref="ReactorSocket.Detach"/>: a socket that .NET's socket engine watched (after async I/O) reaches the
/// reactor watched by no other epoll set of the process, so the engine's thread no longer wakes on its traffic.
/// </summary>
public sealed class ReactorSocketTests
{
    [Fact]
    public async Task ADetachedSocketIsWatchedByNoOtherEpollSetAndStillCarriesData()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen();
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        var accepting = listener.AcceptAsync();
        await client.ConnectAsync(listener.LocalEndPoint!);
        using var server = await accepting;

        // Async I/O on both ends, as the connect and the handshake do: the engine registers the sockets.
        var one = new byte[1];
        await client.SendAsync(new byte[] { 1 });
        Assert.Equal(1, await server.ReceiveAsync(one));
        string inode = Inode(client);
        Assert.NotEmpty(EpollSetsWatching(inode)); // the engine's: what Detach must take the socket out of

        using var detached = ReactorSocket.Detach(client, NullLogger.Instance, "test");
        Assert.Empty(EpollSetsWatching(inode));
        Assert.Equal(inode, Inode(detached));

        // The connection is the same, both ways (the descriptor is non-blocking, as the reactor uses it).
        Assert.Equal(3, RawSend(detached, [7, 8, 9]));
        var got = new byte[3];
        int n = 0;
        while (n < 3)
        {
            n += await server.ReceiveAsync(got.AsMemory(n));
        }

        Assert.Equal(new byte[] { 7, 8, 9 }, got);
        await server.SendAsync(new byte[] { 5 });
        await Hci.Testing.Deadline.WaitUntilAsync(() => RawReceive(detached, one) == 1, "the byte sent back");
        Assert.Equal(5, one[0]);
    }

    [Fact]
    public void DroppingWatchesOfADescriptorNoEpollSetWatchesRemovesNothing()
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        Assert.Equal(0, ReactorSocket.DropForeignWatches((int)socket.Handle));
        Assert.Equal(0, ReactorSocket.DropForeignWatches(-1));
    }

    [Theory]
    [InlineData("tfd:       12 events:       19 data:        0  pos:0 ino:2ca9 sdev:9", "12", "2ca9", true)]
    [InlineData("tfd:      161 events: 8000001d data:                3  pos:0 ino:2ca9 sdev:9", "161", "2ca9", true)]
    [InlineData("tfd:      112 events:       19 data:        0  pos:0 ino:2ca9 sdev:9", "12", "2ca9", false)] // 12 is not 112
    [InlineData("tfd:       12 events:       19 data:        0  pos:0 ino:2ca90 sdev:9", "12", "2ca9", false)] // nor ino a prefix
    [InlineData("tfd:       12 events:       19 data:        0  pos:0 ino:1 sdev:9", "12", "2ca9", false)] // same number, another file
    [InlineData("tfd:       12 events:       19 data:        0  pos:0", "12", "2ca9", false)] // no inode
    [InlineData("tfd:", "12", "2ca9", false)]
    [InlineData("tfd:12", "12", "2ca9", false)]
    [InlineData("pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t2ca9", "12", "2ca9", false)] // not an epoll descriptor
    [InlineData("", "12", "2ca9", false)]
    public void TheFdinfoParserFindsExactlyTheWatchOfThatDescriptorOnThatFile(string text, string tfd, string ino, bool expected)
    {
        string fdinfo = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\n"
            + "tfd:        7 events:       19 data:        0  pos:0 ino:2ca9 sdev:9\n" // another descriptor, same file
            + text + "\n";
        Assert.Equal(expected, ReactorSocket.Watches(fdinfo, tfd, ino));
    }

    private static unsafe long RawSend(Socket socket, byte[] data)
    {
        fixed (byte* p = data)
        {
            return Tmds.Linux.LibC.send((int)socket.Handle, p, data.Length, Tmds.Linux.LibC.MSG_DONTWAIT);
        }
    }

    private static unsafe long RawReceive(Socket socket, byte[] into)
    {
        fixed (byte* p = into)
        {
            return Tmds.Linux.LibC.recv((int)socket.Handle, p, into.Length, Tmds.Linux.LibC.MSG_DONTWAIT);
        }
    }

    // The socket's inode in hex, as epoll's fdinfo lines give it ("socket:[12345]" is decimal).
    private static string Inode(Socket socket)
    {
        string link = new FileInfo($"/proc/self/fd/{(int)socket.Handle}").LinkTarget!;
        ulong value = ulong.Parse(link["socket:[".Length..^1], CultureInfo.InvariantCulture);
        return value.ToString("x", CultureInfo.InvariantCulture);
    }

    private static List<string> EpollSetsWatching(string inode)
    {
        var found = new List<string>();
        foreach (string path in Directory.EnumerateFiles("/proc/self/fdinfo"))
        {
            string text;
            try
            {
                text = File.ReadAllText(path);
            }
            catch (IOException)
            {
                continue;
            }

            foreach (string line in text.Split('\n'))
            {
                if (line.StartsWith("tfd:", StringComparison.Ordinal) && line.Contains($" ino:{inode} ", StringComparison.Ordinal))
                {
                    found.Add($"{Path.GetFileName(path)}: {line.Trim()}");
                }
            }
        }

        return found;
    }
}
