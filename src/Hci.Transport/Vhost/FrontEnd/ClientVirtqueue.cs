using Hci.Core.Blocks;
using Hci.Core.Native;
using Hci.Transport.Virtio;
using Tmds.Linux;

namespace Hci.Transport.Vhost;

/// <summary>
/// The driver side of one split virtqueue in the client's shared memory: the rings, and per entry a request
/// header, a status byte, an indirect descriptor table and a staging buffer. Entry i always uses descriptor i.
/// </summary>
internal sealed unsafe class ClientVirtqueue : IDisposable
{
    private readonly byte* _memory;
    private readonly byte* _meta;
    private readonly byte* _staging;
    private readonly int _metaBytes;
    private readonly int _stagingBytes;

    public ClientVirtqueue(int index, Layout layout, byte* memory, int sizeMax, bool eventIdx, bool polling)
    {
        Index = index;
        Size = layout.Size;
        _memory = memory;
        byte* start = memory + layout.Offset;
        Descriptors = (nint)start;
        Avail = (nint)(start + layout.DescBytes);
        Used = (nint)(start + Align(layout.DescBytes + layout.AvailBytes, 4096));
        _meta = start + layout.RingBytes;
        _metaBytes = layout.MetaBytes;
        _staging = start + Align(layout.RingBytes + ((long)layout.Size * layout.MetaBytes), 4096);
        _stagingBytes = layout.Staging;
        TableEntries = layout.TableEntries;
        SizeMax = sizeMax;
        EventIdx = eventIdx;
        Polling = polling;
        Kick = new FileDescriptorHandle(LibC.eventfd(0, LibC.EFD_CLOEXEC | LibC.EFD_NONBLOCK));
        Call = new FileDescriptorHandle(LibC.eventfd(0, LibC.EFD_CLOEXEC | LibC.EFD_NONBLOCK));
        if (Kick.IsInvalid || Call.IsInvalid)
        {
            Dispose();
            throw new IOException($"eventfd failed: {Errno.Describe(LibC.errno)}.");
        }

        if (polling && !eventIdx)
        {
            *SplitRing.AvailFlags((byte*)Avail) = SplitRing.AvailNoInterrupt;
        }
    }

    public int Index { get; }

    public int Size { get; }

    public int TableEntries { get; }

    public int SizeMax { get; }

    public bool EventIdx { get; }

    public bool Polling { get; }

    public nint Descriptors { get; }

    public nint Avail { get; }

    public nint Used { get; }

    /// <summary>The kick eventfd (driver to device).</summary>
    public FileDescriptorHandle Kick { get; }

    /// <summary>The call eventfd (device to driver).</summary>
    public FileDescriptorHandle Call { get; }

    public bool InUse { get; set; }

    /// <summary>The used index the back-end has published.</summary>
    public ushort UsedIndex => Volatile.Read(ref *SplitRing.UsedIndex((byte*)Used));

    /// <summary>Set when the back-end is gone for good; the owner fails what is in flight.</summary>
    public volatile bool Failed;

    /// <summary>Wakes the owner (set by the queue that owns this virtqueue).</summary>
    public Action? WakeOwner { get; set; }

    public static long Align(long value, long alignment) => (value + alignment - 1) / alignment * alignment;

    public byte* Meta(int slot) => _meta + ((long)slot * _metaBytes);

    public byte* Staging(int slot) => _staging + ((long)slot * _stagingBytes);

    /// <summary>The back-end's address of a pointer into the shared memory (its offset).</summary>
    public ulong Address(void* p) => (ulong)((byte*)p - _memory);

    public void KickNow()
    {
        ulong one = 1;
        LibC.write(Kick.Fd, &one, sizeof(ulong));
    }

    public void Fail()
    {
        Failed = true;
        WakeOwner?.Invoke();
    }

    public void Dispose()
    {
        Kick.Dispose();
        Call.Dispose();
    }

    /// <summary>Where a virtqueue's parts lie in the shared memory.</summary>
    /// <param name="Size">Entries.</param>
    /// <param name="TableEntries">Descriptors per indirect table.</param>
    /// <param name="Staging">Staging bytes per entry.</param>
    /// <param name="Offset">Start in the shared memory.</param>
    public readonly record struct Layout(int Size, int TableEntries, int Staging, long Offset)
    {
        public long DescBytes => (long)SplitRing.Sizes(Size).Descriptors;

        public long AvailBytes => (long)SplitRing.Sizes(Size).Avail;

        public long UsedBytes => (long)SplitRing.Sizes(Size).Used;

        public long RingBytes => Align(DescBytes + AvailBytes, 4096) + Align(UsedBytes, 4096);

        public int MetaBytes => (int)Align(64 + ((long)TableEntries * sizeof(VirtqDescriptor)), 64);

        public long Bytes => Align(RingBytes + ((long)Size * MetaBytes), 4096) + ((long)Size * Align(Staging, 4096));
    }
}
