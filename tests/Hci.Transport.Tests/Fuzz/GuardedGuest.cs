using Hci.Transport.Vhost;
using Hci.Transport.Virtio;
using Tmds.Linux;

namespace Hci.Transport.Tests.Fuzz;

/// <summary>
/// A fake guest whose memory is one anonymous mapping (reserved, not committed: only touched pages cost memory)
/// with a PROT_NONE guard page on each side, so any access just outside guest memory faults at once instead of
/// reading or corrupting a neighbour. Ring layout: descriptors at 0, available ring at 0x1000, used ring at 0x2000
/// (queue size up to 256), indirect tables at 0x10000 (16 KiB each), headers at 0x20000, status bytes at 0x21000,
/// data from 0x30000.
/// </summary>
internal sealed unsafe class GuardedGuest : IDisposable
{
    public const ulong Gpa = 0x1_0000_0000;
    public const ulong AvailOffset = 0x1000;
    public const ulong UsedOffset = 0x2000;
    public const ulong IndirectOffset = 0x10000;
    public const ulong HeaderOffset = 0x20000;
    public const ulong StatusOffset = 0x21000;
    public const ulong DataOffset = 0x30000;
    private const int Guard = 4096;

    private readonly byte* _reservation;
    private readonly ulong _reserved;

    public GuardedGuest(ulong size, int queueSize)
    {
        Size = size;
        QueueSize = queueSize;
        _reserved = size + (2 * Guard);
        _reservation = (byte*)LibC.mmap(null, (size_t)_reserved, LibC.PROT_NONE, LibC.MAP_PRIVATE | LibC.MAP_ANONYMOUS | LibC.MAP_NORESERVE, -1, 0);
        if (_reservation == (byte*)-1)
        {
            throw new InvalidOperationException($"could not reserve {_reserved} bytes of guest memory: errno {LibC.errno}");
        }

        Host = _reservation + Guard;
        if (LibC.mprotect(Host, (size_t)size, LibC.PROT_READ | LibC.PROT_WRITE) != 0)
        {
            throw new InvalidOperationException($"mprotect failed: errno {LibC.errno}");
        }

        Memory = new GuestMemory([new GuestMemoryRegion(Gpa, size, 0x7f00_0000_0000, (nint)Host)]);
        Queue = new SplitVirtqueue(Memory, queueSize, (nint)Host, (nint)(Host + AvailOffset), (nint)(Host + UsedOffset));
    }

    public byte* Host { get; }

    public ulong Size { get; }

    public int QueueSize { get; }

    public GuestMemory Memory { get; }

    public SplitVirtqueue Queue { get; }

    public ushort AvailIdx { get; private set; }

    public ushort UsedIdx => Volatile.Read(ref *(ushort*)(Host + UsedOffset + 2));

    public (uint Id, uint Length) UsedEntry(int i) =>
        (*(uint*)(Host + UsedOffset + 4 + ((i % QueueSize) * 8)), *(uint*)(Host + UsedOffset + 8 + ((i % QueueSize) * 8)));

    public void SetDescriptor(ulong tableOffset, int index, ulong address, uint length, ushort flags, ushort next)
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
        avail[2 + (AvailIdx % QueueSize)] = head;
        AvailIdx++;
        Volatile.Write(ref avail[1], AvailIdx);
    }

    /// <summary>Gives back the pages a case dirtied (the mapping stays), so a long run does not grow.</summary>
    public void Forget(ulong offset, ulong length)
    {
        ulong start = offset & ~4095UL;
        ulong end = Math.Min(Size, (offset + length + 4095) & ~4095UL);
        if (end > start && start >= DataOffset)
        {
            LibC.madvise(Host + start, (size_t)(end - start), LibC.MADV_DONTNEED);
        }
    }

    public void Dispose() => LibC.munmap(_reservation, (size_t)_reserved);
}
