using System.Buffers.Binary;
using Hci.Core.Replication;

namespace Hci.Core.Storage;

/// <summary>
/// Where each area of a store lies on its device (docs/cluster.md): the superblock (page 0), then the metadata pages
/// (activity log, volume table, allocation table, checksums, contiguous, so that metadata page <c>p</c> lies at byte
/// <c>4096 * (1 + p)</c>), then the data slots from a 1 MiB boundary.
/// </summary>
internal sealed class ReplicaStoreLayout
{
    public const int PageSize = ReplicaGeometry.BlockSize;
    public const int LogEntrySize = 8;
    public const int VolumeEntrySize = 32;
    public const int AllocEntrySize = 32;
    public const int ChecksumSize = 4;
    public const ulong Magic = 0x524F545352494348; // "HCIRSTOR" little-endian
    public const uint Version = 1;
    private const long DataAlignment = 1 << 20;
    private const int SuperblockBytes = 8 + 4 + 4 + 16 + (10 * 8);

    private ReplicaStoreLayout(Guid storeId, long extentSize, long slotCount, int maxVolumes)
    {
        StoreId = storeId;
        ExtentSize = extentSize;
        SlotCount = slotCount;
        MaxVolumes = maxVolumes;
        BlocksPerExtent = (int)(extentSize / ReplicaGeometry.BlockSize);
        LogFirstPage = 0;
        LogPages = Pages(slotCount * LogEntrySize);
        VolumeFirstPage = LogFirstPage + LogPages;
        VolumePages = Pages((long)maxVolumes * VolumeEntrySize);
        AllocFirstPage = VolumeFirstPage + VolumePages;
        AllocPages = Pages(slotCount * AllocEntrySize);
        ChecksumFirstPage = AllocFirstPage + AllocPages;
        ChecksumPages = Pages(slotCount * BlocksPerExtent * ChecksumSize);
        MetaPages = ChecksumFirstPage + ChecksumPages;
        DataOffset = DataOffsetFor(MetaPages);
    }

    public Guid StoreId { get; }

    public long ExtentSize { get; }

    public long SlotCount { get; }

    public int MaxVolumes { get; }

    public int BlocksPerExtent { get; }

    public long RegionSize => ExtentSize / ReplicaGeometry.RegionsPerExtent;

    public int LogFirstPage { get; }

    public int LogPages { get; }

    public int VolumeFirstPage { get; }

    public int VolumePages { get; }

    public int AllocFirstPage { get; }

    public int AllocPages { get; }

    public int ChecksumFirstPage { get; }

    public int ChecksumPages { get; }

    /// <summary>Metadata pages after the superblock.</summary>
    public int MetaPages { get; }

    public long DataOffset { get; }

    public long MetaBytes => (long)MetaPages * PageSize;

    /// <summary>The largest layout that fits <paramref name="capacity"/>.</summary>
    /// <exception cref="ArgumentException">Not even one slot fits.</exception>
    public static ReplicaStoreLayout For(long capacity, Guid storeId, long extentSize, int maxVolumes)
    {
        long slots = capacity / extentSize;
        while (slots > 0)
        {
            var layout = new ReplicaStoreLayout(storeId, extentSize, slots, maxVolumes);
            if (layout.DataOffset <= capacity && slots <= (capacity - layout.DataOffset) / extentSize)
            {
                if ((long)layout.MetaPages > int.MaxValue / 2)
                {
                    throw new ArgumentException($"A device of {capacity} bytes needs more metadata than one store holds with {extentSize}-byte extents; use larger extents.");
                }

                return layout;
            }

            slots--;
        }

        throw new ArgumentException($"The device ({capacity} bytes) is too small for a replica store with {extentSize}-byte extents and {maxVolumes} volumes: it needs at least {new ReplicaStoreLayout(storeId, extentSize, 1, maxVolumes).DataOffset + extentSize} bytes.");
    }

    public long PageOffset(int page) => (long)(1 + page) * PageSize;

    public long SlotOffset(int slot) => DataOffset + (slot * ExtentSize);

    public int LogPage(int slot) => LogFirstPage + (int)((long)slot * LogEntrySize / PageSize);

    public long LogByte(int slot) => ((long)LogFirstPage * PageSize) + ((long)slot * LogEntrySize);

    public int VolumePage(int entry) => VolumeFirstPage + (int)((long)entry * VolumeEntrySize / PageSize);

    public long VolumeByte(int entry) => ((long)VolumeFirstPage * PageSize) + ((long)entry * VolumeEntrySize);

    public int AllocPage(int slot) => AllocFirstPage + (int)((long)slot * AllocEntrySize / PageSize);

    public long AllocByte(int slot) => ((long)AllocFirstPage * PageSize) + ((long)slot * AllocEntrySize);

    public long ChecksumIndex(int slot, int block) => ((long)slot * BlocksPerExtent) + block;

    public int ChecksumPage(long index) => ChecksumFirstPage + (int)(index * ChecksumSize / PageSize);

    public long ChecksumByte(long index) => ((long)ChecksumFirstPage * PageSize) + (index * ChecksumSize);

    /// <summary>Writes the superblock (one page).</summary>
    public void WriteSuperblock(Span<byte> page)
    {
        page[..PageSize].Clear();
        BinaryPrimitives.WriteUInt64LittleEndian(page, Magic);
        BinaryPrimitives.WriteUInt32LittleEndian(page[8..], Version);
        BinaryPrimitives.WriteUInt32LittleEndian(page[12..], ReplicaGeometry.BlockSize);
        StoreId.TryWriteBytes(page[16..]);
        int o = 32;
        foreach (long v in new long[] { ExtentSize, SlotCount, MaxVolumes, PageOffset(LogFirstPage), LogPages, PageOffset(VolumeFirstPage), VolumePages, PageOffset(AllocFirstPage), AllocPages, PageOffset(ChecksumFirstPage) })
        {
            BinaryPrimitives.WriteInt64LittleEndian(page[o..], v);
            o += 8;
        }

        BinaryPrimitives.WriteUInt32LittleEndian(page[SuperblockBytes..], Crc32C.Compute(page[..SuperblockBytes]));
    }

    /// <summary>Reads and checks a superblock.</summary>
    /// <exception cref="InvalidDataException">Not a store, another version, or damaged; the message says which.</exception>
    public static ReplicaStoreLayout ReadSuperblock(ReadOnlySpan<byte> page, long capacity, string deviceName)
    {
        if (BinaryPrimitives.ReadUInt64LittleEndian(page) != Magic)
        {
            throw new InvalidDataException($"'{deviceName}' holds no replica store (no superblock magic); format it first.");
        }

        uint crc = BinaryPrimitives.ReadUInt32LittleEndian(page[SuperblockBytes..]);
        if (crc != Crc32C.Compute(page[..SuperblockBytes]))
        {
            throw new InvalidDataException($"The replica store superblock on '{deviceName}' fails its checksum: the device is damaged.");
        }

        uint version = BinaryPrimitives.ReadUInt32LittleEndian(page[8..]);
        if (version != Version || BinaryPrimitives.ReadUInt32LittleEndian(page[12..]) != ReplicaGeometry.BlockSize)
        {
            throw new InvalidDataException($"The replica store on '{deviceName}' has format version {version}; this Hci reads version {Version}.");
        }

        var id = new Guid(page.Slice(16, 16));
        long extentSize = BinaryPrimitives.ReadInt64LittleEndian(page[32..]);
        long slots = BinaryPrimitives.ReadInt64LittleEndian(page[40..]);
        long maxVolumes = BinaryPrimitives.ReadInt64LittleEndian(page[48..]);
        if (extentSize < ReplicaStoreOptions.MinExtentSize || extentSize > ReplicaStoreOptions.MaxExtentSize || !long.IsPow2(extentSize)
            || slots < 1 || maxVolumes < 1 || maxVolumes > 1 << 20)
        {
            throw new InvalidDataException($"The replica store superblock on '{deviceName}' describes an impossible geometry.");
        }

        var layout = new ReplicaStoreLayout(id, extentSize, slots, (int)maxVolumes);
        if (layout.DataOffset > capacity || slots > (capacity - layout.DataOffset) / extentSize)
        {
            throw new InvalidDataException($"The replica store on '{deviceName}' needs {layout.SlotOffset(0) + (slots * extentSize)} bytes but the device has {capacity}: it was formatted on a larger device.");
        }

        return layout;
    }

    private static int Pages(long bytes) => (int)((bytes + PageSize - 1) / PageSize);

    private static long DataOffsetFor(int metaPages)
    {
        long end = (long)(1 + metaPages) * PageSize;
        return (end + DataAlignment - 1) / DataAlignment * DataAlignment;
    }
}
