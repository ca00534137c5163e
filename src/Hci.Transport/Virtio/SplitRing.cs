using System.Runtime.InteropServices;

namespace Hci.Transport.Virtio;

/// <summary>
/// The split virtqueue's memory layout (virtio 1.x, 2.7; Linux <c>include/uapi/linux/virtio_ring.h</c>), defined once
/// for both sides: the device (<see cref="SplitVirtqueue"/>, reading a guest's rings) and the driver (the vhost-user
/// client, writing its own). Offsets are from the start of each part; every index into a ring is taken modulo the
/// queue size, a power of two.
/// </summary>
internal static unsafe class SplitRing
{
    /// <summary>VRING_DESC_F_NEXT: the chain continues at <see cref="VirtqDescriptor.Next"/>.</summary>
    public const ushort DescriptorNext = 1;

    /// <summary>VRING_DESC_F_WRITE: the device writes this buffer.</summary>
    public const ushort DescriptorWrite = 2;

    /// <summary>VRING_DESC_F_INDIRECT: the buffer is a table of descriptors.</summary>
    public const ushort DescriptorIndirect = 4;

    /// <summary>VRING_USED_F_NO_NOTIFY: the device asks the driver not to kick.</summary>
    public const ushort UsedNoNotify = 1;

    /// <summary>VRING_AVAIL_F_NO_INTERRUPT: the driver asks the device not to interrupt.</summary>
    public const ushort AvailNoInterrupt = 1;

    /// <summary>Bytes of the descriptor table, available ring and used ring for a queue of <paramref name="size"/>.</summary>
    /// <param name="size">Queue size.</param>
    /// <returns>The three sizes, event fields included.</returns>
    public static (ulong Descriptors, ulong Avail, ulong Used) Sizes(int size)
        => ((ulong)size * (ulong)sizeof(VirtqDescriptor), 6 + ((ulong)size * 2), 6 + ((ulong)size * (ulong)sizeof(VirtqUsedElement)));

    /// <summary>avail->flags.</summary>
    /// <param name="avail">The available ring.</param>
    /// <returns>Its address.</returns>
    public static ushort* AvailFlags(byte* avail) => (ushort*)avail;

    /// <summary>avail->idx: where the driver will write its next entry.</summary>
    /// <param name="avail">The available ring.</param>
    /// <returns>Its address.</returns>
    public static ushort* AvailIndex(byte* avail) => (ushort*)(avail + 2);

    /// <summary>avail->ring[slot].</summary>
    /// <param name="avail">The available ring.</param>
    /// <param name="slot">The slot, already reduced modulo the size.</param>
    /// <returns>Its address.</returns>
    public static ushort* AvailEntry(byte* avail, int slot) => (ushort*)(avail + 4) + slot;

    /// <summary>used_event (after avail->ring): with EVENT_IDX, the used index at which the driver wants an interrupt.</summary>
    /// <param name="avail">The available ring.</param>
    /// <param name="size">Queue size.</param>
    /// <returns>Its address.</returns>
    public static ushort* UsedEvent(byte* avail, int size) => (ushort*)(avail + 4) + size;

    /// <summary>used->flags.</summary>
    /// <param name="used">The used ring.</param>
    /// <returns>Its address.</returns>
    public static ushort* UsedFlags(byte* used) => (ushort*)used;

    /// <summary>used->idx: where the device will write its next entry.</summary>
    /// <param name="used">The used ring.</param>
    /// <returns>Its address.</returns>
    public static ushort* UsedIndex(byte* used) => (ushort*)(used + 2);

    /// <summary>used->ring[slot].</summary>
    /// <param name="used">The used ring.</param>
    /// <param name="slot">The slot, already reduced modulo the size.</param>
    /// <returns>Its address.</returns>
    public static VirtqUsedElement* UsedEntry(byte* used, int slot) => (VirtqUsedElement*)(used + 4) + slot;

    /// <summary>avail_event (after used->ring): with EVENT_IDX, the available index at which the device wants a kick.</summary>
    /// <param name="used">The used ring.</param>
    /// <param name="size">Queue size.</param>
    /// <returns>Its address.</returns>
    public static ushort* AvailEvent(byte* used, int size) => (ushort*)((VirtqUsedElement*)(used + 4) + size);

    /// <summary>
    /// vring_need_event: whether moving an index from <paramref name="old"/> to <paramref name="now"/> crossed the
    /// other side's event index (so a batch costs one notification).
    /// </summary>
    /// <param name="eventIndex">The other side's event index.</param>
    /// <param name="now">The index now.</param>
    /// <param name="old">The index at the last notification.</param>
    /// <returns>True to notify.</returns>
    public static bool NeedEvent(ushort eventIndex, ushort now, ushort old) => (ushort)(now - eventIndex - 1) < (ushort)(now - old);
}

/// <summary>struct vring_desc: one buffer of a chain.</summary>
[StructLayout(LayoutKind.Sequential, Size = 16)]
internal struct VirtqDescriptor(ulong address, uint length, ushort flags)
{
    /// <summary>Guest physical address (or, for the client, the offset in its shared memory).</summary>
    public ulong Address = address;

    /// <summary>Length in bytes.</summary>
    public uint Length = length;

    /// <summary>VRING_DESC_F_* bits.</summary>
    public ushort Flags = flags;

    /// <summary>The next descriptor when <see cref="SplitRing.DescriptorNext"/> is set.</summary>
    public ushort Next;
}

/// <summary>struct vring_used_elem: a chain returned to the driver.</summary>
[StructLayout(LayoutKind.Sequential, Size = 8)]
internal struct VirtqUsedElement
{
    /// <summary>The chain's head index.</summary>
    public uint Id;

    /// <summary>Bytes the device wrote into the chain.</summary>
    public uint Length;
}
