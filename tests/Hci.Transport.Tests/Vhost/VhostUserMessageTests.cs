using System.Buffers.Binary;
using Hci.Transport.Vhost;

namespace Hci.Transport.Tests;

public sealed class VhostUserMessageTests
{
    private static byte[] Header(uint request, uint flags, uint size)
    {
        var b = new byte[12];
        BinaryPrimitives.WriteUInt32LittleEndian(b, request);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), flags);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(8), size);
        return b;
    }

    [Fact]
    public void HeadersAreCheckedForVersionReplyBitsAndSize()
    {
        Assert.Equal(VhostUserError.None, VhostUserMessage.ParseHeader(Header(1, 1, 0), out var h));
        Assert.Equal(VhostUserRequest.GetFeatures, h.Request);
        Assert.Equal(VhostUserError.None, VhostUserMessage.ParseHeader(Header(2, 1 | 8, 8), out h));
        Assert.True(h.NeedReply);
        Assert.Equal(VhostUserError.BadFlags, VhostUserMessage.ParseHeader(Header(1, 2, 0), out _));
        Assert.Equal(VhostUserError.BadFlags, VhostUserMessage.ParseHeader(Header(1, 1 | 4, 0), out _));
        Assert.Equal(VhostUserError.TooLarge, VhostUserMessage.ParseHeader(Header(5, 1, 1 << 20), out _));
        Assert.Equal(VhostUserError.ShortHeader, VhostUserMessage.ParseHeader(new byte[11], out _));
    }

    [Fact]
    public void VringMessagesRefuseQueuesThatDoNotExistAndMisalignedRings()
    {
        var state = new byte[8];
        BinaryPrimitives.WriteUInt32LittleEndian(state, 1);
        BinaryPrimitives.WriteUInt32LittleEndian(state.AsSpan(4), 256);
        Assert.Equal(VhostUserError.None, VhostUserMessage.ReadVringState(state, 2, out int index, out uint num));
        Assert.Equal((1, 256u), (index, num));
        Assert.Equal(VhostUserError.BadValue, VhostUserMessage.ReadVringState(state, 1, out _, out _));
        Assert.Equal(VhostUserError.BadSize, VhostUserMessage.ReadVringState(state.AsSpan(0, 7), 2, out _, out _));

        var addr = new byte[40];
        BinaryPrimitives.WriteUInt64LittleEndian(addr.AsSpan(8), 0x1000);
        BinaryPrimitives.WriteUInt64LittleEndian(addr.AsSpan(16), 0x3000);
        BinaryPrimitives.WriteUInt64LittleEndian(addr.AsSpan(24), 0x2000);
        Assert.Equal(VhostUserError.None, VhostUserMessage.ReadVringAddr(addr, 1, out _, out ulong d, out ulong u, out ulong a));
        Assert.Equal((0x1000UL, 0x3000UL, 0x2000UL), (d, u, a));
        BinaryPrimitives.WriteUInt64LittleEndian(addr.AsSpan(8), 0x1008);
        Assert.Equal(VhostUserError.BadValue, VhostUserMessage.ReadVringAddr(addr, 1, out _, out _, out _, out _));

        var kick = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(kick, 1);
        Assert.Equal(VhostUserError.None, VhostUserMessage.ReadVringFd(kick, 1, 2, out index, out bool noFd));
        Assert.False(noFd);
        Assert.Equal(VhostUserError.BadFds, VhostUserMessage.ReadVringFd(kick, 0, 2, out _, out _));
        BinaryPrimitives.WriteUInt64LittleEndian(kick, 1 | VhostUserMessage.VringNoFd);
        Assert.Equal(VhostUserError.None, VhostUserMessage.ReadVringFd(kick, 0, 2, out _, out noFd));
        Assert.True(noFd);
        BinaryPrimitives.WriteUInt64LittleEndian(kick, 1UL << 40);
        Assert.Equal(VhostUserError.BadValue, VhostUserMessage.ReadVringFd(kick, 1, 2, out _, out _));
    }

    [Fact]
    public void AMemoryTableMustMatchItsFdsAndHoldNoWrappingRegion()
    {
        var table = new byte[8 + 64];
        BinaryPrimitives.WriteUInt32LittleEndian(table, 2);
        for (int i = 0; i < 2; i++)
        {
            var r = table.AsSpan(8 + (i * 32));
            BinaryPrimitives.WriteUInt64LittleEndian(r, (ulong)i << 32);
            BinaryPrimitives.WriteUInt64LittleEndian(r[8..], 1 << 30);
            BinaryPrimitives.WriteUInt64LittleEndian(r[16..], 0x7f0000000000UL + ((ulong)i << 32));
        }

        var regions = new (ulong, ulong, ulong, ulong)[8];
        Assert.Equal(VhostUserError.None, VhostUserMessage.ReadMemTable(table, 2, regions, out int count));
        Assert.Equal(2, count);
        Assert.Equal(VhostUserError.BadFds, VhostUserMessage.ReadMemTable(table, 1, regions, out _));
        Assert.Equal(VhostUserError.BadSize, VhostUserMessage.ReadMemTable(table.AsSpan(0, 40), 2, regions, out _));
        BinaryPrimitives.WriteUInt64LittleEndian(table.AsSpan(8 + 32), ulong.MaxValue - 10);
        Assert.Equal(VhostUserError.BadValue, VhostUserMessage.ReadMemTable(table, 2, regions, out _));
        BinaryPrimitives.WriteUInt32LittleEndian(table, 9);
        Assert.Equal(VhostUserError.BadValue, VhostUserMessage.ReadMemTable(table, 9, regions, out _));
    }

    [Fact]
    public void ConfigWindowsStayInsideTheConfigSpace()
    {
        var get = new byte[12 + 8];
        BinaryPrimitives.WriteUInt32LittleEndian(get, 52);
        BinaryPrimitives.WriteUInt32LittleEndian(get.AsSpan(4), 8);
        Assert.Equal(VhostUserError.None, VhostUserMessage.ReadConfig(get, 60, out uint offset, out uint size, out var data));
        Assert.Equal((52u, 8u, 8), (offset, size, data.Length));
        Assert.Equal(VhostUserError.BadValue, VhostUserMessage.ReadConfig(get, 56, out _, out _, out _));
        BinaryPrimitives.WriteUInt32LittleEndian(get.AsSpan(4), 9);
        Assert.Equal(VhostUserError.BadSize, VhostUserMessage.ReadConfig(get, 60, out _, out _, out _));
    }

    [Fact]
    public void HundredThousandRandomMessagesAreAnsweredWithoutAnException()
    {
        var rng = new Random(7);
        var buffer = new byte[600];
        var regions = new (ulong, ulong, ulong, ulong)[8];
        var outcomes = new HashSet<VhostUserError>();
        for (int i = 0; i < 100_000; i++)
        {
            int length = rng.Next(0, buffer.Length);
            rng.NextBytes(buffer.AsSpan(0, length));
            if (rng.Next(2) == 0 && length >= 8)
            {
                BinaryPrimitives.WriteUInt32LittleEndian(buffer, (uint)rng.Next(0, 10)); // plausible counts and indices
            }

            var payload = buffer.AsSpan(0, length);
            int fds = rng.Next(0, 10);
            outcomes.Add(VhostUserMessage.ParseHeader(payload, out _));
            outcomes.Add(VhostUserMessage.ReadU64(payload, out _));
            outcomes.Add(VhostUserMessage.ReadVringState(payload, 4, out _, out _));
            outcomes.Add(VhostUserMessage.ReadVringAddr(payload, 4, out _, out _, out _, out _));
            outcomes.Add(VhostUserMessage.ReadVringFd(payload, fds, 4, out _, out _));
            outcomes.Add(VhostUserMessage.ReadMemTable(payload, fds, regions, out int count));
            Assert.InRange(count, 0, 8);
            outcomes.Add(VhostUserMessage.ReadConfig(payload, 60, out uint off, out uint size, out var data));
            Assert.True(off + (ulong)data.Length <= 60 || data.Length == 0);
        }

        Assert.Contains(VhostUserError.BadSize, outcomes);
        Assert.Contains(VhostUserError.BadValue, outcomes);
        Assert.Contains(VhostUserError.BadFds, outcomes);
    }
}
