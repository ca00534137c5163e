using Hci.Transport.Vhost;
using Hci.Transport.Virtio;

namespace Hci.Transport.Tests;

public sealed unsafe class SplitVirtqueueTests
{
    private const ushort Next = 1, Write = 2, Indirect = 4;

    [Fact]
    public void AWellFormedChainYieldsItsBuffersInOrderWithDirections()
    {
        using var g = new GuestRing();
        g.SetDescriptor(0, GuestRing.Base + GuestRing.DataOffset, 16, Next, 1);
        g.SetDescriptor(1, GuestRing.Base + GuestRing.DataOffset + 4096, 4096, Next | Write, 2);
        g.SetDescriptor(2, GuestRing.Base + GuestRing.DataOffset + 8192, 1, Write, 0);
        g.MakeAvailable(0);
        Assert.Equal(1, g.Queue.Pending());
        Assert.True(g.Queue.TryPop(out ushort head));
        Span<ChainSegment> segments = stackalloc ChainSegment[8];
        Assert.Equal(ChainStatus.Ok, g.Queue.WalkChain(head, segments, out int count));
        Assert.Equal(3, count);
        Assert.Equal((nint)(g.Host + GuestRing.DataOffset), segments[0].Address);
        Assert.False(segments[0].DeviceWritable);
        Assert.True(segments[1].DeviceWritable && segments[2].DeviceWritable);
        Assert.Equal(4096u, segments[1].Length);
        Assert.False(g.Queue.TryPop(out _));
    }

    [Fact]
    public void AnIndirectTableIsFollowed()
    {
        using var g = new GuestRing();
        ulong table = GuestRing.DataOffset + 0x20000;
        g.SetDescriptor(0, GuestRing.Base + GuestRing.DataOffset, 16, Next, 1, table);
        g.SetDescriptor(1, GuestRing.Base + GuestRing.DataOffset + 4096, 512, Write | Next, 2, table);
        g.SetDescriptor(2, GuestRing.Base + GuestRing.DataOffset + 8192, 1, Write, 0, table);
        g.SetDescriptor(5, GuestRing.Base + table, 48, Indirect, 0);
        g.MakeAvailable(5);
        Assert.True(g.Queue.TryPop(out ushort head));
        Span<ChainSegment> segments = stackalloc ChainSegment[8];
        Assert.Equal(ChainStatus.Ok, g.Queue.WalkChain(head, segments, out int count));
        Assert.Equal(3, count);
    }

    public static TheoryData<string, string> Malformed => new()
    {
        { "loop", nameof(ChainStatus.Loop) },
        { "next-past-table", nameof(ChainStatus.BadIndex) },
        { "head-past-table", nameof(ChainStatus.BadIndex) },
        { "outside-memory", nameof(ChainStatus.OutOfBounds) },
        { "straddles-end", nameof(ChainStatus.OutOfBounds) },
        { "address-wraps", nameof(ChainStatus.OutOfBounds) },
        { "read-after-write", nameof(ChainStatus.BadOrder) },
        { "nested-indirect", nameof(ChainStatus.BadIndirect) },
        { "indirect-with-next", nameof(ChainStatus.BadIndirect) },
        { "indirect-misaligned-length", nameof(ChainStatus.BadIndirect) },
        { "indirect-outside-memory", nameof(ChainStatus.OutOfBounds) },
        { "too-many-segments", nameof(ChainStatus.TooManySegments) },
    };

    [Theory]
    [MemberData(nameof(Malformed))]
    public void AMalformedChainIsRefusedWithItsReasonAndTheQueueKeepsWorking(string kind, string expectedName)
    {
        var expected = Enum.Parse<ChainStatus>(expectedName); // the wire enum is internal: xUnit passes its name
        using var g = new GuestRing(size: 16);
        ulong data = GuestRing.Base + GuestRing.DataOffset;
        ulong table = GuestRing.DataOffset + 0x20000;
        ushort head = 0;
        switch (kind)
        {
            case "loop":
                g.SetDescriptor(0, data, 16, Next, 1);
                g.SetDescriptor(1, data, 16, Next, 0);
                break;
            case "next-past-table":
                g.SetDescriptor(0, data, 16, Next, 16);
                break;
            case "head-past-table":
                head = 40;
                break;
            case "outside-memory":
                g.SetDescriptor(0, 0x1000, 16, 0, 0);
                break;
            case "straddles-end":
                g.SetDescriptor(0, GuestRing.Base + GuestRing.MemorySize - 8, 16, 0, 0);
                break;
            case "address-wraps":
                g.SetDescriptor(0, ulong.MaxValue - 4, 16, 0, 0);
                break;
            case "read-after-write":
                g.SetDescriptor(0, data, 16, Write | Next, 1);
                g.SetDescriptor(1, data, 16, 0, 0);
                break;
            case "nested-indirect":
                g.SetDescriptor(0, GuestRing.Base + table, 16, Indirect, 0, table);
                g.SetDescriptor(0, GuestRing.Base + table, 16, Indirect, 0);
                break;
            case "indirect-with-next":
                g.SetDescriptor(0, GuestRing.Base + table, 16, Indirect | Next, 1);
                break;
            case "indirect-misaligned-length":
                g.SetDescriptor(0, GuestRing.Base + table, 20, Indirect, 0);
                break;
            case "indirect-outside-memory":
                g.SetDescriptor(0, 0x10, 32, Indirect, 0);
                break;
            case "too-many-segments":
                for (int i = 0; i < 10; i++)
                {
                    g.SetDescriptor(i, data, 16, Next, (ushort)(i + 1));
                }

                g.SetDescriptor(10, data, 16, 0, 0);
                break;
        }

        g.MakeAvailable(head);
        Assert.True(g.Queue.TryPop(out ushort popped));
        Span<ChainSegment> segments = stackalloc ChainSegment[kind == "too-many-segments" ? 8 : 64];
        Assert.Equal(expected, g.Queue.WalkChain(popped, segments, out _));

        // The next, well-formed request is served.
        g.SetDescriptor(3, data, 16, Next, 4);
        g.SetDescriptor(4, data + 4096, 1, Write, 0);
        g.MakeAvailable(3);
        Assert.True(g.Queue.TryPop(out ushort good));
        Assert.Equal(ChainStatus.Ok, g.Queue.WalkChain(good, segments, out int count));
        Assert.Equal(2, count);
    }

    [Fact]
    public void HundredThousandRandomChainsNeverEscapeGuestMemoryNorThrow()
    {
        using var g = new GuestRing(size: 64);
        var rng = new Random(2026);
        Span<ChainSegment> segments = stackalloc ChainSegment[32];
        var statuses = new Dictionary<ChainStatus, int>();
        for (int round = 0; round < 100_000; round++)
        {
            // Random descriptors: addresses near, inside and far outside the region, random flags and links.
            for (int i = 0; i < 8; i++)
            {
                int index = rng.Next(64);
                ulong address = rng.Next(4) switch
                {
                    0 => GuestRing.Base + (ulong)rng.Next(GuestRing.MemorySize),
                    1 => GuestRing.Base + (ulong)rng.Next(GuestRing.MemorySize - 4096, GuestRing.MemorySize + 4096),
                    2 => (ulong)rng.NextInt64(),
                    _ => GuestRing.Base + GuestRing.DataOffset + 0x20000,
                };
                uint length = rng.Next(3) == 0 ? (uint)rng.Next() : (uint)rng.Next(0, 8192);
                g.SetDescriptor(index, address, length, (ushort)rng.Next(8), (ushort)rng.Next(rng.Next(2) == 0 ? 64 : 65536));
            }

            // A random indirect table too.
            for (int i = 0; i < 4; i++)
            {
                g.SetDescriptor(i, GuestRing.Base + (ulong)rng.Next(GuestRing.MemorySize), (uint)rng.Next(0, 8192), (ushort)rng.Next(8), (ushort)rng.Next(8), GuestRing.DataOffset + 0x20000);
            }

            g.MakeAvailable((ushort)rng.Next(rng.Next(4) == 0 ? 65536 : 64));
            Assert.True(g.Queue.TryPop(out ushort head));
            var status = g.Queue.WalkChain(head, segments, out int count);
            statuses[status] = statuses.GetValueOrDefault(status) + 1;
            for (int i = 0; i < count; i++)
            {
                Assert.True(g.Inside(segments[i]), $"round {round}: a segment escaped guest memory");
            }

            if (status == ChainStatus.Ok)
            {
                g.Queue.PushUsed(head, 0);
            }
        }

        Assert.True(statuses.Count >= 5, "the fuzzer reached few outcomes: " + string.Join(", ", statuses));
        Assert.True(statuses.GetValueOrDefault(ChainStatus.Ok) > 1000);
    }

    [Fact]
    public void UsedEntriesArePublishedAndEventIdxBatchesInterrupts()
    {
        using var g = new GuestRing(size: 16, eventIdx: true);
        var avail = (ushort*)(g.Host + GuestRing.AvailOffset);
        avail[2 + 16] = 2; // used_event: interrupt once the used index passes 2
        g.Queue.PushUsed(7, 100);
        Assert.True(g.Queue.NeedsInterrupt()); // the first signal is always sent
        g.Queue.PushUsed(8, 200);
        Assert.False(g.Queue.NeedsInterrupt()); // used idx 2: not past used_event yet
        g.Queue.PushUsed(9, 300);
        Assert.True(g.Queue.NeedsInterrupt()); // used idx 3 crossed used_event 2
        Assert.Equal(3, g.UsedIdx);
        Assert.Equal((8u, 200u), g.UsedEntry(1));

        using var plain = new GuestRing(size: 16);
        plain.Queue.PushUsed(1, 1);
        Assert.True(plain.Queue.NeedsInterrupt());
        ((ushort*)(plain.Host + GuestRing.AvailOffset))[0] = 1; // VRING_AVAIL_F_NO_INTERRUPT
        Assert.False(plain.Queue.NeedsInterrupt());
    }

    [Fact]
    public void AMalformedMemoryTableIsRefused()
    {
        Assert.Throws<ArgumentException>(() => new GuestMemory([new GuestMemoryRegion(0, 0, 0, 1)]));
        Assert.Throws<ArgumentException>(() => new GuestMemory([new GuestMemoryRegion(ulong.MaxValue - 10, 100, 0, 1)]));
        Assert.Throws<ArgumentException>(() => new GuestMemory([new GuestMemoryRegion(0, 4096, 0, 1), new GuestMemoryRegion(2048, 4096, 8192, 2)]));
        var m = new GuestMemory([new GuestMemoryRegion(0x1000, 0x1000, 0x9000, 0x100000)]);
        Assert.True(m.TryTranslate(0x1000, 0x1000, out var p) && p == 0x100000);
        Assert.False(m.TryTranslate(0x1800, 0x1000, out _));
        Assert.False(m.TryTranslate(0xfff, 2, out _));
        Assert.False(m.TryTranslate(0x1000, 0, out _));
        Assert.True(m.TryTranslateUser(0x9800, 0x800, out p) && p == 0x100800);
        Assert.False(m.TryTranslateUser(0x9800, 0x801, out _));
    }
}
