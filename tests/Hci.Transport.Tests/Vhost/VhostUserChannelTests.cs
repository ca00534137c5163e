using System.Buffers.Binary;
using Hci.Transport.Vhost;
using Tmds.Linux;

namespace Hci.Transport.Tests;

public sealed unsafe class VhostUserChannelTests : IDisposable
{
    private readonly int _peer;
    private readonly VhostUserChannel _channel;

    public VhostUserChannelTests()
    {
        int* pair = stackalloc int[2];
        Assert.Equal(0, LibC.socketpair(LibC.AF_UNIX, LibC.SOCK_STREAM | LibC.SOCK_CLOEXEC, 0, pair));
        _peer = pair[0];
        _channel = new VhostUserChannel(pair[1]);
    }

    public void Dispose()
    {
        _channel.Dispose();
        LibC.close(_peer);
    }

    private void Send(uint request, uint flags, byte[] payload, int[] fds, uint? claimedSize = null)
    {
        var message = new byte[12 + payload.Length];
        BinaryPrimitives.WriteUInt32LittleEndian(message, request);
        BinaryPrimitives.WriteUInt32LittleEndian(message.AsSpan(4), flags);
        BinaryPrimitives.WriteUInt32LittleEndian(message.AsSpan(8), claimedSize ?? (uint)payload.Length);
        payload.CopyTo(message, 12);
        fixed (byte* p = message)
        {
            iovec iov = default;
            iov.iov_base = p;
            iov.iov_len = message.Length;
            msghdr msg = default;
            msg.msg_iov = &iov;
            msg.msg_iovlen = 1;
            int controlLength = LibC.CMSG_SPACE(Math.Max(1, fds.Length) * sizeof(int));
            byte* control = stackalloc byte[controlLength];
            new Span<byte>(control, controlLength).Clear();
            if (fds.Length > 0)
            {
                msg.msg_control = control;
                msg.msg_controllen = controlLength;
                var c = LibC.CMSG_FIRSTHDR(&msg);
                c->cmsg_level = LibC.SOL_SOCKET;
                c->cmsg_type = LibC.SCM_RIGHTS;
                c->cmsg_len = VhostUserChannel.CmsgHeaderLength + (fds.Length * sizeof(int)); // glibc's CMSG_LEN
                for (int i = 0; i < fds.Length; i++)
                {
                    ((int*)LibC.CMSG_DATA(c))[i] = fds[i];
                }
            }

            Assert.Equal(message.Length, (long)LibC.sendmsg(_peer, &msg, 0));
        }
    }


    [Fact]
    public void AMessageArrivesWithItsPayloadAndAUsableDescriptor()
    {
        int efd = LibC.eventfd(0, LibC.EFD_CLOEXEC);
        var payload = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(payload, 0);
        Send((uint)VhostUserRequest.SetVringKick, 1, payload, [efd]);
        LibC.close(efd); // the receiver has its own copy
        var buffer = new byte[VhostUserHeader.MaxPayload];
        var fds = new int[VhostUserChannel.MaxFds];
        Assert.Equal(VhostUserError.None, _channel.Receive(buffer, fds, out var header, out int count));
        Assert.Equal(VhostUserRequest.SetVringKick, header.Request);
        Assert.Equal(1, count);
        ulong one = 1;
        Assert.Equal(8, (long)LibC.write(fds[0], &one, 8));
        LibC.close(fds[0]);
    }

    [Fact]
    public void TooManyDescriptorsAreAllClosedAndTheMessageRefused()
    {
        // What is sent are the write ends of pipes whose read ends only this test holds. Once the test closes its
        // own copies of the write ends, a read end reports end-of-file exactly when no copy of its write end is
        // open anywhere in the process: a check by identity, not by descriptor number, which tests running in
        // parallel reuse at once.
        const int Count = 10;
        var readEnds = new int[Count];
        var writeEnds = new int[Count];
        int* pipe = stackalloc int[2];
        for (int i = 0; i < Count; i++)
        {
            Assert.Equal(0, LibC.pipe2(pipe, LibC.O_CLOEXEC | LibC.O_NONBLOCK));
            readEnds[i] = pipe[0];
            writeEnds[i] = pipe[1];
        }

        try
        {
            Send((uint)VhostUserRequest.SetMemTable, 1, new byte[8], writeEnds);
            foreach (int fd in writeEnds)
            {
                LibC.close(fd);
            }

            var fds = new int[VhostUserChannel.MaxFds];
            Assert.NotEqual(VhostUserError.None, _channel.Receive(new byte[VhostUserHeader.MaxPayload], fds, out _, out int count));
            Assert.Equal(0, count);
            for (int i = 0; i < Count; i++)
            {
                // A process started by another test in this moment holds a copy until its exec closes it (all are
                // CLOEXEC): wait for the end-of-file with a deadline; a leaked descriptor never gives one.
                var watch = System.Diagnostics.Stopwatch.StartNew();
                long n;
                byte b;
                while ((n = LibC.read(readEnds[i], &b, 1)) != 0 && watch.Elapsed < TimeSpan.FromSeconds(10))
                {
                    Thread.Yield();
                }

                Assert.True(n == 0, $"the write end of pipe {i} is still open somewhere in the process (read gave {n}): a received descriptor leaked");
            }
        }
        finally
        {
            foreach (int fd in readEnds)
            {
                LibC.close(fd);
            }
        }
    }

    [Fact]
    public void AnOversizedPayloadAndABadVersionAreRefusedAndAClosedPeerIsSeen()
    {
        Send((uint)VhostUserRequest.SetMemTable, 1, [], [], claimedSize: 1 << 24);
        Assert.Equal(VhostUserError.TooLarge, _channel.Receive(new byte[VhostUserHeader.MaxPayload], new int[8], out _, out _));
        Send((uint)VhostUserRequest.GetFeatures, 3, [], []);
        Assert.Equal(VhostUserError.BadFlags, _channel.Receive(new byte[VhostUserHeader.MaxPayload], new int[8], out _, out _));
        LibC.shutdown(_peer, 1);
        Assert.Equal(VhostUserError.ShortHeader, _channel.Receive(new byte[VhostUserHeader.MaxPayload], new int[8], out _, out _));
    }

    [Fact]
    public void RepliesCarryTheReplyBitAndThePayload()
    {
        Assert.True(_channel.Reply(VhostUserRequest.GetFeatures, [1, 2, 3, 4, 5, 6, 7, 8]));
        var reply = new byte[20];
        fixed (byte* p = reply)
        {
            Assert.Equal(20, (long)LibC.recv(_peer, p, 20, 0));
        }

        Assert.Equal(1u, BinaryPrimitives.ReadUInt32LittleEndian(reply));
        Assert.Equal(5u, BinaryPrimitives.ReadUInt32LittleEndian(reply.AsSpan(4)));
        Assert.Equal(8u, BinaryPrimitives.ReadUInt32LittleEndian(reply.AsSpan(8)));
        Assert.Equal(8, reply[19]);
    }
}
