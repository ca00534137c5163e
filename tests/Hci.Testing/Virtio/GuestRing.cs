using System.Runtime.InteropServices;
using Hci.Transport.Vhost;
using Hci.Transport.Virtio;

namespace Hci.Testing;

/// <summary>A fake guest: one memory region in native memory holding a split ring and data buffers.</summary>
internal sealed unsafe class GuestRing : IDisposable
{
    public const ulong Base = 0x4000_0000;
    public const int MemorySize = 1 << 20;
    public const ulong DescOffset = 0;
    public const ulong AvailOffset = 0x4000;
    public const ulong UsedOffset = 0x8000;
    public const ulong DataOffset = 0x10000;

    /// <param name="size">Ring size.</param>
    /// <param name="eventIdx">EVENT_IDX negotiated.</param>
    /// <param name="memoryLength">Bytes of guest memory: reserved, not committed (pages cost memory only once
    /// touched), so a guest of several GiB can offer descriptors of 2^31 bytes and more.</param>
    public GuestRing(int size = 256, bool eventIdx = false, long memoryLength = MemorySize)
    {
        Length = memoryLength;
        Host = (byte*)Tmds.Linux.LibC.mmap(null, (Tmds.Linux.size_t)(ulong)memoryLength, Tmds.Linux.LibC.PROT_READ | Tmds.Linux.LibC.PROT_WRITE,
            Tmds.Linux.LibC.MAP_PRIVATE | Tmds.Linux.LibC.MAP_ANONYMOUS | Tmds.Linux.LibC.MAP_NORESERVE, -1, 0);
        if (Host == (byte*)-1)
        {
            throw new InvalidOperationException($"mmap of {memoryLength} bytes of guest memory failed (errno {Tmds.Linux.LibC.errno}).");
        }

        Memory = new GuestMemory([new GuestMemoryRegion(Base, (ulong)memoryLength, 0x7f00_0000_0000, (nint)Host)]);
        Size = size;
        Queue = new SplitVirtqueue(Memory, size, (nint)(Host + DescOffset), (nint)(Host + AvailOffset), (nint)(Host + UsedOffset), 0, eventIdx);
    }

    /// <summary>A ring laid out in memory someone else owns (a front-end's shared memfd): not freed here.</summary>
    /// <param name="host">The memory.</param>
    /// <param name="length">Its length.</param>
    /// <param name="size">Ring size.</param>
    public GuestRing(byte* host, long length, int size)
    {
        Host = host;
        Length = length;
        _owned = false;
        Size = size;
        Memory = new GuestMemory([new GuestMemoryRegion(Base, (ulong)length, 0x7f00_0000_0000, (nint)host)]);
        Queue = new SplitVirtqueue(Memory, size, (nint)(host + DescOffset), (nint)(host + AvailOffset), (nint)(host + UsedOffset), 0, false);
    }

    private readonly bool _owned = true;

    public byte* Host { get; }

    /// <summary>Bytes of guest memory.</summary>
    public long Length { get; }

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

    public void Dispose()
    {
        if (_owned)
        {
            Tmds.Linux.LibC.munmap(Host, (Tmds.Linux.size_t)(ulong)Length);
        }
    }
}
