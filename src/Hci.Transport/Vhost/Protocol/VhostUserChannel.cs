using Hci.Core.Blocks;
using Hci.Core.Native;
using Tmds.Linux;

namespace Hci.Transport.Vhost;

/// <summary>
/// One vhost-user connection: messages with their file descriptors (SCM_RIGHTS) in, replies out. Control plane:
/// blocking calls on the connection's own thread. Descriptors arrive close-on-exec; any that cannot be used
/// (too many, or a truncated control message) are closed at once, never leaked.
/// </summary>
internal sealed unsafe class VhostUserChannel : IDisposable
{
    /// <summary>Most file descriptors one message may carry.</summary>
    public const int MaxFds = 8;

    /// <summary>
    /// CMSG_LEN(0) on Linux: the aligned header. Tmds.LibC's CMSG_LEN also rounds the data length up (CMSG_LEN(4)
    /// is 24 there, 20 in glibc), which would miscount descriptors, so lengths are computed here.
    /// </summary>
    internal const int CmsgHeaderLength = 16;

    private readonly FileDescriptorHandle _socket;

    /// <summary>Takes ownership of a connected Unix stream socket.</summary>
    /// <param name="fd">The socket.</param>
    public VhostUserChannel(int fd)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(fd);
        _socket = new FileDescriptorHandle(fd);
    }

    /// <summary>The socket, or -1 once disposed.</summary>
    public int Fd => _socket.IsClosed ? -1 : _socket.Fd;

    /// <summary>Reads one message.</summary>
    /// <param name="payload">Receives the payload; at least <see cref="VhostUserHeader.MaxPayload"/> bytes.</param>
    /// <param name="fds">Receives the descriptors; the caller owns (and must close) those it is given.</param>
    /// <param name="header">The header.</param>
    /// <param name="fdCount">Descriptors received.</param>
    /// <returns>
    /// <see cref="VhostUserError.None"/>; a header error (the connection cannot be resynchronized and should be
    /// closed); or <see cref="VhostUserError.ShortHeader"/> when the peer closed the connection.
    /// </returns>
    public VhostUserError Receive(Span<byte> payload, Span<int> fds, out VhostUserHeader header, out int fdCount) => Receive(payload, fds, reply: false, out header, out fdCount);

    /// <summary>Reads one message: a front-end's request, or (<paramref name="reply"/> true) a back-end's reply.</summary>
    /// <param name="payload">Receives the payload.</param>
    /// <param name="fds">Receives the descriptors; the caller owns those it is given.</param>
    /// <param name="reply">True on the front-end side, reading replies.</param>
    /// <param name="header">The header.</param>
    /// <param name="fdCount">Descriptors received.</param>
    /// <returns>As <see cref="Receive(Span{byte}, Span{int}, out VhostUserHeader, out int)"/>.</returns>
    public VhostUserError Receive(Span<byte> payload, Span<int> fds, bool reply, out VhostUserHeader header, out int fdCount)
    {
        header = default;
        fdCount = 0;
        byte* head = stackalloc byte[VhostUserHeader.Length];
        int controlLength = LibC.CMSG_SPACE(MaxFds * sizeof(int));
        byte* control = stackalloc byte[controlLength];
        iovec iov = default;
        iov.iov_base = head;
        iov.iov_len = VhostUserHeader.Length;
        msghdr msg = default;
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = controlLength;
        long n;
        do
        {
            n = LibC.recvmsg(Fd, &msg, LibC.MSG_CMSG_CLOEXEC);
        }
        while (n < 0 && LibC.errno == Errno.EINTR);

        // Collect descriptors first, whatever else is wrong, so that none leaks.
        int received = 0;
        bool tooMany = false;
        for (var c = LibC.CMSG_FIRSTHDR(&msg); c != null; c = LibC.CMSG_NXTHDR(&msg, c))
        {
            if (c->cmsg_level != LibC.SOL_SOCKET || c->cmsg_type != LibC.SCM_RIGHTS)
            {
                continue;
            }

            int count = ((int)(uint)c->cmsg_len - CmsgHeaderLength) / sizeof(int);
            int* data = (int*)LibC.CMSG_DATA(c);
            for (int i = 0; i < count; i++)
            {
                if (received < fds.Length && received < MaxFds)
                {
                    fds[received++] = data[i];
                }
                else
                {
                    LibC.close(data[i]);
                    tooMany = true;
                }
            }
        }

        if (n <= 0)
        {
            CloseAll(fds[..received]);
            return VhostUserError.ShortHeader;
        }

        if (n < VhostUserHeader.Length && !ReadExactly(new Span<byte>(head + n, VhostUserHeader.Length - (int)n)))
        {
            CloseAll(fds[..received]);
            return VhostUserError.ShortHeader;
        }

        if (tooMany || (msg.msg_flags & 0x8 /* MSG_CTRUNC */) != 0)
        {
            CloseAll(fds[..received]);
            return VhostUserError.BadFds;
        }

        var error = VhostUserMessage.ParseHeader(new ReadOnlySpan<byte>(head, VhostUserHeader.Length), reply, out header);
        if (error != VhostUserError.None)
        {
            CloseAll(fds[..received]);
            return error;
        }

        if (header.Size > payload.Length)
        {
            CloseAll(fds[..received]);
            return VhostUserError.TooLarge;
        }

        if (header.Size > 0 && !ReadExactly(payload[..(int)header.Size]))
        {
            CloseAll(fds[..received]);
            return VhostUserError.ShortHeader;
        }

        fdCount = received;
        return VhostUserError.None;
    }

    /// <summary>Sends a reply (version 1 with the reply bit) or a message.</summary>
    /// <param name="request">The request being answered.</param>
    /// <param name="payload">The payload.</param>
    /// <returns>False when the peer is gone.</returns>
    public bool Reply(VhostUserRequest request, ReadOnlySpan<byte> payload) => Send(request, 0x5, payload, -1);

    /// <summary>Sends a message with the given flags and, optionally, one file descriptor (SCM_RIGHTS).</summary>
    /// <param name="request">The request.</param>
    /// <param name="flags">Header flags: 1 for a front-end message, 0x9 to also ask for a REPLY_ACK, 0x5 for a reply.</param>
    /// <param name="payload">The payload.</param>
    /// <param name="fd">A descriptor to pass, or -1.</param>
    /// <returns>False when the peer is gone.</returns>
    public bool Send(VhostUserRequest request, uint flags, ReadOnlySpan<byte> payload, int fd)
    {
        Span<int> fds = stackalloc int[1];
        fds[0] = fd;
        return Send(request, flags, payload, fd < 0 ? default : fds);
    }

    /// <summary>Sends a message with the given flags and file descriptors (SCM_RIGHTS).</summary>
    /// <param name="request">The request.</param>
    /// <param name="flags">Header flags.</param>
    /// <param name="payload">The payload.</param>
    /// <param name="fds">Descriptors to pass (at most <see cref="MaxFds"/>); they stay the caller's.</param>
    /// <returns>False when the peer is gone.</returns>
    public bool Send(VhostUserRequest request, uint flags, ReadOnlySpan<byte> payload, ReadOnlySpan<int> fds)
    {
        if (fds.Length > MaxFds)
        {
            throw new ArgumentException($"At most {MaxFds} descriptors go with one message.", nameof(fds));
        }

        Span<byte> message = stackalloc byte[VhostUserHeader.Length + Math.Min(payload.Length, 512)];
        if (payload.Length > 512)
        {
            message = new byte[VhostUserHeader.Length + payload.Length];
        }

        System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(message, (uint)request);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(message[4..], flags);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(message[8..], (uint)payload.Length);
        payload.CopyTo(message[VhostUserHeader.Length..]);
        fixed (byte* p = message)
        {
            int sent = 0;
            if (fds.Length > 0)
            {
                // The descriptors ride with the first bytes; the rest of a long message follows with send.
                int controlLength = LibC.CMSG_SPACE(MaxFds * sizeof(int));
                byte* control = stackalloc byte[controlLength];
                new Span<byte>(control, controlLength).Clear();
                iovec iov = default;
                iov.iov_base = p;
                iov.iov_len = message.Length;
                msghdr msg = default;
                msg.msg_iov = &iov;
                msg.msg_iovlen = 1;
                msg.msg_control = control;
                msg.msg_controllen = CmsgSpace(fds.Length);
                var c = (cmsghdr*)control;
                c->cmsg_level = LibC.SOL_SOCKET;
                c->cmsg_type = LibC.SCM_RIGHTS;
                c->cmsg_len = CmsgHeaderLength + (fds.Length * sizeof(int));
                int* data = (int*)(control + CmsgHeaderLength);
                for (int i = 0; i < fds.Length; i++)
                {
                    data[i] = fds[i];
                }

                long n;
                do
                {
                    n = LibC.sendmsg(Fd, &msg, LibC.MSG_NOSIGNAL);
                }
                while (n < 0 && LibC.errno == Errno.EINTR);
                if (n <= 0)
                {
                    return false;
                }

                sent = (int)n;
            }

            while (sent < message.Length)
            {
                long n = LibC.send(Fd, p + sent, message.Length - sent, LibC.MSG_NOSIGNAL);
                if (n < 0 && LibC.errno == Errno.EINTR)
                {
                    continue;
                }

                if (n <= 0)
                {
                    return false;
                }

                sent += (int)n;
            }
        }

        return true;
    }

    /// <summary>Closes the socket.</summary>
    public void Dispose() => _socket.Dispose();

    private static int CmsgSpace(int fdCount) => CmsgHeaderLength + (((fdCount * sizeof(int)) + 7) & ~7);

    private static void CloseAll(Span<int> fds)
    {
        foreach (int fd in fds)
        {
            LibC.close(fd);
        }
    }

    private bool ReadExactly(Span<byte> into)
    {
        fixed (byte* p = into)
        {
            int have = 0;
            while (have < into.Length)
            {
                long n = LibC.recv(Fd, p + have, into.Length - have, 0);
                if (n < 0 && LibC.errno == Errno.EINTR)
                {
                    continue;
                }

                if (n <= 0)
                {
                    return false;
                }

                have += (int)n;
            }
        }

        return true;
    }
}
