using System.Runtime.InteropServices;
using Hci.Transport.Vhost;
using Hci.Transport.Virtio;

namespace Hci.Transport.Tests;

/// <summary>A fake guest: one memory region in native memory holding a split ring and data buffers.</summary>
internal sealed unsafe class GuestRing : IDisposable
{
    public const ulong Base = 0x4000_0000;
    public const int MemorySize = 1 << 20;
    public const ulong DescOffset = 0;
    public const ulong AvailOffset = 0x4000;
    public const ulong UsedOffset = 0x8000;
    public const ulong DataOffset = 0x10000;

    public GuestRing(int size = 256, bool eventIdx = false)
    {
        Host = (byte*)NativeMemory.AlignedAlloc(MemorySize, 4096);
        new Span<byte>(Host, MemorySize).Clear();
        Memory = new GuestMemory([new GuestMemoryRegion(Base, MemorySize, 0x7f00_0000_0000, (nint)Host)]);
        Size = size;
        Queue = new SplitVirtqueue(Memory, size, (nint)(Host + DescOffset), (nint)(Host + AvailOffset), (nint)(Host + UsedOffset), 0, eventIdx);
    }

    public byte* Host { get; }

    public GuestMemory Memory { get; }

    public SplitVirtqueue Queue { get; }

    public int Size { get; }

    public ushort AvailIdx;

    public void SetDescriptor(int index, ulong address, uint length, ushort flags, ushort next, ulong tableOffset = DescOffset)
    {
        byte* d = Host + tableOffset + (index * 16);
        *(ulong*)d = address;
        *(uint*)(d + 8) = length;
        *(ushort*)(d + 12) = flags;
        *(ushort*)(d + 14) = next;
    }

    public void MakeAvailable(ushort head)
    {
        var avail = (ushort*)(Host + AvailOffset);
        avail[2 + (AvailIdx % Size)] = head;
        AvailIdx++;
        Volatile.Write(ref avail[1], AvailIdx);
    }

    public ushort UsedIdx => *(ushort*)(Host + UsedOffset + 2);

    public (uint Id, uint Length) UsedEntry(int i) => (*(uint*)(Host + UsedOffset + 4 + ((i % Size) * 8)), *(uint*)(Host + UsedOffset + 8 + ((i % Size) * 8)));

    public bool Inside(ChainSegment s) => s.Address >= (nint)Host && s.Address + s.Length <= (nint)(Host + MemorySize);

    public void Dispose() => NativeMemory.AlignedFree(Host);
}
