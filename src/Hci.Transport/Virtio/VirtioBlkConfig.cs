using System.Buffers.Binary;
using Hci.Core.Blocks;

namespace Hci.Transport.Virtio;

/// <summary>
/// A virtio-blk device's features and config space (virtio 1.x, 5.2.4), derived from an Hci device's geometry
/// and capabilities. Kept apart from the vhost-user transport: any virtio transport serves the same bytes.
/// </summary>
internal sealed class VirtioBlkConfig
{
    /// <summary>Bytes of the config space as virtio 1.2 lays it out up to write_zeroes_may_unmap.</summary>
    public const int Size = 60;

    /// <summary>Feature bit: size_max is valid.</summary>
    public const int FeatureSizeMax = 1;

    /// <summary>Feature bit: seg_max is valid.</summary>
    public const int FeatureSegMax = 2;

    /// <summary>Feature bit: read-only device.</summary>
    public const int FeatureReadOnly = 5;

    /// <summary>Feature bit: blk_size is valid.</summary>
    public const int FeatureBlkSize = 6;

    /// <summary>Feature bit: FLUSH is supported.</summary>
    public const int FeatureFlush = 9;

    /// <summary>Feature bit: the writeback field is valid and writable.</summary>
    public const int FeatureConfigWce = 11;

    /// <summary>Feature bit: num_queues is valid.</summary>
    public const int FeatureMultiQueue = 12;

    /// <summary>Feature bit: DISCARD is supported.</summary>
    public const int FeatureDiscard = 13;

    /// <summary>Feature bit: WRITE_ZEROES is supported.</summary>
    public const int FeatureWriteZeroes = 14;

    /// <summary>Feature bit: indirect descriptors.</summary>
    public const int FeatureIndirectDescriptors = 28;

    /// <summary>Feature bit: used_event / avail_event.</summary>
    public const int FeatureEventIndex = 29;

    /// <summary>Feature bit: virtio 1.</summary>
    public const int FeatureVersion1 = 32;

    /// <summary>Offset of the writeback byte.</summary>
    public const int WritebackOffset = 32;

    private readonly byte[] _space = new byte[Size];

    /// <summary>Derives features and config from a device.</summary>
    /// <param name="geometry">The device's geometry.</param>
    /// <param name="capabilities">Its capabilities.</param>
    /// <param name="queueCount">Queues offered (1 to 65535).</param>
    /// <param name="readOnly">Export read-only whatever the device allows.</param>
    public VirtioBlkConfig(BlockGeometry geometry, BlockDeviceCapabilities capabilities, int queueCount, bool readOnly = false)
    {
        ArgumentNullException.ThrowIfNull(geometry);
        ArgumentOutOfRangeException.ThrowIfLessThan(queueCount, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(queueCount, ushort.MaxValue);
        int lbs = geometry.LogicalBlockSize;
        if (lbs < VirtioBlk.SectorSize)
        {
            throw new ArgumentException($"virtio-blk needs a logical block size of at least 512 bytes (the device has {lbs}).", nameof(geometry));
        }

        // seg_max must fit a chain in a 128-entry queue (QEMU's default) less header and status; size_max keeps
        // seg_max segments within the device's largest transfer, so the guest never builds a request it refuses.
        SegMax = Math.Min(geometry.MaxSegments, 126);
        SizeMax = Math.Max(4096, geometry.MaxTransferBytes / SegMax / 4096 * 4096);
        SegMax = Math.Max(1, Math.Min(SegMax, geometry.MaxTransferBytes / SizeMax));
        bool ro = readOnly || (capabilities & BlockDeviceCapabilities.ReadOnly) != 0;
        ulong features = (1UL << FeatureSizeMax) | (1UL << FeatureSegMax) | (1UL << FeatureBlkSize) | (1UL << FeatureMultiQueue)
            | (1UL << FeatureIndirectDescriptors) | (1UL << FeatureEventIndex) | (1UL << FeatureVersion1);
        if (ro)
        {
            features |= 1UL << FeatureReadOnly;
        }
        else
        {
            features |= (1UL << FeatureFlush) | (1UL << FeatureConfigWce);
            if ((capabilities & BlockDeviceCapabilities.Discard) != 0)
            {
                features |= 1UL << FeatureDiscard;
            }

            if ((capabilities & BlockDeviceCapabilities.WriteZeroes) != 0)
            {
                features |= 1UL << FeatureWriteZeroes;
            }
        }

        Features = features;
        ReadOnly = ro;
        var s = _space.AsSpan();
        BinaryPrimitives.WriteUInt64LittleEndian(s, (ulong)(geometry.Capacity / VirtioBlk.SectorSize));
        BinaryPrimitives.WriteUInt32LittleEndian(s[8..], (uint)SizeMax);
        BinaryPrimitives.WriteUInt32LittleEndian(s[12..], (uint)SegMax);
        BinaryPrimitives.WriteUInt32LittleEndian(s[20..], (uint)lbs);
        s[WritebackOffset] = 1; // write-back: the guest sends FLUSH (and fsync means something)
        BinaryPrimitives.WriteUInt16LittleEndian(s[34..], (ushort)queueCount);
        uint maxRangeSectors = (uint)Math.Min(geometry.Capacity / VirtioBlk.SectorSize, 1L << 22);
        BinaryPrimitives.WriteUInt32LittleEndian(s[36..], maxRangeSectors);
        BinaryPrimitives.WriteUInt32LittleEndian(s[40..], 1);
        BinaryPrimitives.WriteUInt32LittleEndian(s[44..], (uint)(lbs / VirtioBlk.SectorSize));
        BinaryPrimitives.WriteUInt32LittleEndian(s[48..], maxRangeSectors);
        BinaryPrimitives.WriteUInt32LittleEndian(s[52..], 1);
    }

    /// <summary>The device's feature bits (virtio-blk and ring features; transports add their own).</summary>
    public ulong Features { get; }

    /// <summary>The export is read-only (VIRTIO_BLK_F_RO is offered): no write may reach the device.</summary>
    public bool ReadOnly { get; }

    /// <summary>
    /// True when writes must be durable before they are answered: the guest cleared the writeback byte, or did not
    /// negotiate VIRTIO_BLK_F_FLUSH (it will never send a flush, so it sees a write-through cache).
    /// </summary>
    public bool WriteThrough => !_flushNegotiated || _space[WritebackOffset] == 0;

    private volatile bool _flushNegotiated = true;

    /// <summary>
    /// Applies the features the driver accepted: without VIRTIO_BLK_F_FLUSH the cache is write-through and the
    /// writeback byte reads 0 (virtio 1.2, 5.2.5.1).
    /// </summary>
    /// <param name="features">The negotiated feature bits.</param>
    public void Negotiate(ulong features)
    {
        _flushNegotiated = (features & (1UL << FeatureFlush)) != 0;
        if (!_flushNegotiated)
        {
            _space[WritebackOffset] = 0;
        }
    }

    /// <summary>Most data segments in one request.</summary>
    public int SegMax { get; }

    /// <summary>Largest data segment.</summary>
    public int SizeMax { get; }

    /// <summary>Whether the guest sees a write-back cache (the writeback byte).</summary>
    public bool Writeback => _space[WritebackOffset] != 0;

    /// <summary>Copies a window of the config space; bytes past the end read as zero.</summary>
    /// <param name="offset">Window start.</param>
    /// <param name="into">Receives the window.</param>
    public void Read(int offset, Span<byte> into)
    {
        into.Clear();
        if (offset < Size)
        {
            var from = _space.AsSpan(offset, Math.Min(Size - offset, into.Length));
            from.CopyTo(into);
        }
    }

    /// <summary>Applies a guest write: only the writeback byte is writable.</summary>
    /// <param name="offset">Window start.</param>
    /// <param name="data">The bytes.</param>
    /// <returns>False when the write touches anything else.</returns>
    public bool Write(int offset, ReadOnlySpan<byte> data)
    {
        if (offset != WritebackOffset || data.Length != 1 || (Features & (1UL << FeatureConfigWce)) == 0)
        {
            return false;
        }

        _space[WritebackOffset] = data[0] == 0 ? (byte)0 : (byte)1;
        return true;
    }
}
