using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Hci.Core.Blocks;
using Hci.Core.Buffers;
using Hci.Core.Reactors;
using Hci.Core.Replication;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Hci.Core.Storage;

/// <summary>
/// The replicas one device holds: thin extents of volumes in fixed slots, one CRC-32C per 4 KiB block, an activity
/// log of the regions being written, and each volume's newest epoch (fencing), all crash-safe (docs/cluster.md).
/// </summary>
/// <remarks>
/// <para>Requests reach a store through a per-thread queue (<c>LocalReplicaChannel</c> in process, or the
/// node-to-node protocol's server), never through this class directly. The store keeps its metadata in memory (about
/// 1 MiB per GiB of data slots, mostly checksums) and writes each metadata page back before the request that changed
/// it is answered (activity-log, allocation and volume-table pages with force unit access), except the checksum pages
/// of overwrites: those are written back in batches and before their regions leave the activity log, which covers
/// them meanwhile (recovery recomputes a dirty region's checksums from its data), so a replica write is one device
/// write. A block's first write waits for its checksum page, with the durability of the write.</para>
/// <para>A metadata page is assumed to be written atomically (4 KiB: NVMe drives' atomic write unit, 4Kn disks).</para>
/// </remarks>
public sealed partial class ReplicaStore : IDisposable
{
    private readonly ReplicaStoreLayout _layout;
    private readonly ILogger _logger;
    private readonly Lock _sync = new();
    private unsafe byte* _meta;

    // Page state, indexed by metadata page. Versions grow by one per in-memory change.
    private readonly long[] _pageVersion;
    private readonly long[] _pageWritten;
    private readonly long[] _pageDurable;
    private readonly long[] _pageFuaNeed;
    private readonly long[] _pageWriting;
    private readonly long[] _pageFailed;

    // Checksum pages changed by overwrites and not yet asked for: written back in batches (WriteBack) or before their
    // regions leave the activity log (PrepareClean). The log covers them meanwhile: recovery recomputes the checksums
    // of every block in a dirty region that does not match its data.
    // Per page, the newest version in which one of its blocks got its first checksum (0, "unwritten", to a value): an
    // overwrite in the page may leave its page for later only once that version is durable, or a crash could bring
    // back the 0 and read an acknowledged write as zeros.
    private readonly long[] _pageFresh;
    private readonly int[] _deferred;
    private readonly bool[] _isDeferred;
    private int _deferredCount;
    private long _deferredSince;

    // Slots.
    private readonly ulong[] _slotVolume;
    private readonly long[] _slotExtent;
    private readonly byte[] _slotState; // 0 free, 1 used, 2 dropping
    private readonly long[] _slotAllocVersion;
    private readonly long[] _slotLogVersion;
    private readonly int[] _slotWritesInFlight;
    private readonly long[] _slotWriteSeq;
    private readonly int[] _freeSlots;
    private int _freeCount;
    private readonly Dictionary<(ulong Volume, long Extent), int> _extents = new();

    // Volume table.
    private readonly Dictionary<ulong, int> _volumes = new();
    private readonly ulong[] _volumeEpoch;
    private readonly long[] _volumeVersion;
    private readonly Stack<int> _freeVolumeEntries = new();
    private int _disposed;

    private unsafe ReplicaStore(BlockDevice device, ReplicaStoreLayout layout, ILogger? logger)
    {
        Device = device;
        _layout = layout;
        _logger = logger ?? NullLogger.Instance;
        int pages = layout.MetaPages;
        _pageVersion = new long[pages];
        _pageWritten = new long[pages];
        _pageDurable = new long[pages];
        _pageFuaNeed = new long[pages];
        _pageWriting = new long[pages];
        _pageFailed = new long[pages];
        _pageFresh = new long[pages];
        _deferred = new int[layout.ChecksumPages];
        _isDeferred = new bool[pages];
        int slots = (int)layout.SlotCount;
        _slotVolume = new ulong[slots];
        _slotExtent = new long[slots];
        _slotState = new byte[slots];
        _slotAllocVersion = new long[slots];
        _slotLogVersion = new long[slots];
        _slotWritesInFlight = new int[slots];
        _slotWriteSeq = new long[slots];
        _freeSlots = new int[slots];
        _volumeEpoch = new ulong[layout.MaxVolumes];
        _volumeVersion = new long[layout.MaxVolumes];
        _meta = (byte*)NativeMemory.AllocZeroed((nuint)layout.MetaBytes);
    }

    /// <summary>The device the store lives on (not owned: dispose it after the store).</summary>
    public BlockDevice Device { get; }

    /// <summary>The store's identity, from its superblock.</summary>
    public Guid StoreId => _layout.StoreId;

    /// <summary>The size of the extents (and data slots) the store holds.</summary>
    public long ExtentSize => _layout.ExtentSize;

    /// <summary>How many extents fit (data slots).</summary>
    public long SlotCount => _layout.SlotCount;

    /// <summary>How many volumes the volume table holds.</summary>
    public int MaxVolumes => _layout.MaxVolumes;

    /// <summary>Extents allocated now.</summary>
    public long AllocatedExtents
    {
        get
        {
            lock (_sync)
            {
                return _extents.Count;
            }
        }
    }

    /// <summary>Slots free for new extents.</summary>
    public long FreeSlots
    {
        get
        {
            lock (_sync)
            {
                return _freeCount;
            }
        }
    }

    /// <summary>What the store has counted since it was opened.</summary>
    public ReplicaStoreStats Stats { get; } = new();

    internal ReplicaStoreLayout Layout => _layout;

    internal ILogger Logger => _logger;

    /// <summary>The newest epoch the store has seen for a volume (0 for a volume it does not know).</summary>
    /// <param name="volumeId">The volume.</param>
    /// <returns>The epoch.</returns>
    public ulong GetEpoch(ulong volumeId)
    {
        lock (_sync)
        {
            return _volumes.TryGetValue(volumeId, out int e) ? _volumeEpoch[e] : 0;
        }
    }

    /// <summary>Formats <paramref name="device"/> as an empty store: everything on it is lost.</summary>
    /// <param name="device">A device with flush support and a logical block size that divides 4 KiB.</param>
    /// <param name="options">The layout; defaults if null. Validated first.</param>
    /// <param name="logger">For the store's events; none if null.</param>
    /// <param name="cancellationToken">Checked between writes.</param>
    /// <returns>The open store.</returns>
    /// <exception cref="ArgumentException">The options are invalid, or the device is unsuitable or too small.</exception>
    /// <exception cref="BlockDeviceException">The device failed a write.</exception>
    public static async Task<ReplicaStore> FormatAsync(BlockDevice device, ReplicaStoreOptions? options = null, ILogger? logger = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(device);
        options ??= new ReplicaStoreOptions();
        options.Validate();
        CheckDevice(device);
        var layout = ReplicaStoreLayout.For(device.Geometry.Capacity, options.StoreId ?? Guid.NewGuid(), options.ExtentSize, options.MaxVolumes);
        using var buffer = new AlignedBuffer(1 << 20);

        // Invalidate any old superblock first, so that a crash in the middle leaves no store rather than a mixed one.
        buffer.Span.Clear();
        await device.WriteAsync(0, buffer.Memory[..ReplicaStoreLayout.PageSize], BlockRequestFlags.None, cancellationToken).ConfigureAwait(false);
        await device.FlushAsync(cancellationToken).ConfigureAwait(false);
        long end = layout.PageOffset(layout.MetaPages);
        for (long at = ReplicaStoreLayout.PageSize; at < end; at += buffer.Length)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int n = (int)Math.Min(buffer.Length, end - at);
            await device.WriteAsync(at, buffer.Memory[..n], BlockRequestFlags.None, cancellationToken).ConfigureAwait(false);
        }

        await device.FlushAsync(cancellationToken).ConfigureAwait(false);
        layout.WriteSuperblock(buffer.Span);
        await device.WriteAsync(0, buffer.Memory[..ReplicaStoreLayout.PageSize], BlockRequestFlags.None, cancellationToken).ConfigureAwait(false);
        await device.FlushAsync(cancellationToken).ConfigureAwait(false);
        var store = new ReplicaStore(device, layout, logger);
        store.LoadFromImage();
        StorageLog.Formatted(store._logger, layout.StoreId, device.Name, layout.SlotCount, layout.ExtentSize, layout.DataOffset);
        return store;
    }

    /// <summary>Opens the store on <paramref name="device"/> and recovers it: blocks that an unacknowledged write tore
    /// (inside the activity log) get their checksums recomputed (<see cref="ReplicaStoreStats.TornBlocksReconciled"/>).</summary>
    /// <param name="device">The device a store was formatted on.</param>
    /// <param name="logger">For the store's events; none if null.</param>
    /// <param name="cancellationToken">Checked between reads.</param>
    /// <returns>The open store.</returns>
    /// <exception cref="InvalidDataException">The device holds no store, another version, or damaged metadata.</exception>
    /// <exception cref="ArgumentException">The device is unsuitable.</exception>
    /// <exception cref="BlockDeviceException">The device failed a read or write.</exception>
    public static async Task<ReplicaStore> OpenAsync(BlockDevice device, ILogger? logger = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(device);
        CheckDevice(device);
        using var buffer = new AlignedBuffer(1 << 20);
        await device.ReadAsync(0, buffer.Memory[..ReplicaStoreLayout.PageSize], cancellationToken).ConfigureAwait(false);
        var layout = ReplicaStoreLayout.ReadSuperblock(buffer.Span, device.Geometry.Capacity, device.Name);
        var store = new ReplicaStore(device, layout, logger);
        try
        {
            long bytes = layout.MetaBytes;
            for (long at = 0; at < bytes; at += buffer.Length)
            {
                cancellationToken.ThrowIfCancellationRequested();
                int n = (int)Math.Min(buffer.Length, bytes - at);
                await device.ReadAsync(ReplicaStoreLayout.PageSize + at, buffer.Memory[..n], cancellationToken).ConfigureAwait(false);
                store.CopyIntoImage(at, buffer.Span[..n]);
            }

            store.LoadFromImage();
            await store.RecoverAsync(buffer, cancellationToken).ConfigureAwait(false);
            return store;
        }
        catch
        {
            store.Dispose();
            throw;
        }
    }

    /// <summary>Opens the store on <paramref name="device"/>, or formats it when the device is blank (its first 4 KiB
    /// are zeros, as on a new file): the way a node brings up its devices.</summary>
    /// <param name="device">The device.</param>
    /// <param name="options">The layout if it is formatted; defaults if null.</param>
    /// <param name="logger">For the store's events; none if null.</param>
    /// <param name="cancellationToken">Checked between I/Os.</param>
    /// <returns>The open store.</returns>
    /// <exception cref="InvalidDataException">The device holds something that is not a store, or a damaged store: it
    /// is left alone (format it explicitly with <see cref="FormatAsync"/> to reuse it).</exception>
    public static async Task<ReplicaStore> OpenOrFormatAsync(BlockDevice device, ReplicaStoreOptions? options = null, ILogger? logger = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(device);
        using (var page = new AlignedBuffer(ReplicaStoreLayout.PageSize))
        {
            await device.ReadAsync(0, page.Memory, cancellationToken).ConfigureAwait(false);
            if (page.Span.IndexOfAnyExcept((byte)0) < 0)
            {
                return await FormatAsync(device, options, logger, cancellationToken).ConfigureAwait(false);
            }
        }

        return await OpenAsync(device, logger, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Releases the store's memory. Writes nothing: the store on the device is consistent at every
    /// moment. Close its queues first.</summary>
    public unsafe void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        var meta = _meta;
        _meta = null;
        NativeMemory.Free(meta);
        GC.SuppressFinalize(this);
    }

    /// <summary>Opens a queue on the store for the calling thread (or <paramref name="reactor"/>'s).</summary>
    internal ReplicaStoreQueue CreateQueue(Reactor? reactor = null, int depth = 128)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        return new ReplicaStoreQueue(this, reactor, depth);
    }

    private static void CheckDevice(BlockDevice device)
    {
        var g = device.Geometry;
        if (g.LogicalBlockSize > ReplicaGeometry.BlockSize)
        {
            throw new ArgumentException($"A replica store needs a logical block size of at most {ReplicaGeometry.BlockSize} bytes; '{device.Name}' has {g.LogicalBlockSize}.");
        }

        if (g.MaxTransferBytes < ReplicaGeometry.MaxTransfer)
        {
            throw new ArgumentException($"A replica store needs a device that takes {ReplicaGeometry.MaxTransfer}-byte transfers; '{device.Name}' takes at most {g.MaxTransferBytes}. Open it with MaxTransferBytes = 1 MiB.");
        }

        if (!device.Supports(BlockDeviceCapabilities.Flush | BlockDeviceCapabilities.PersistentData) || device.Supports(BlockDeviceCapabilities.ReadOnly))
        {
            throw new ArgumentException($"A replica store needs a writable device that keeps data and flushes; '{device.Name}' ({device.Engine}) is not one.");
        }
    }

    // ---------------------------------------------------------------- loading and recovery

    private unsafe void LoadFromImage()
    {
        var layout = _layout;
        for (int e = 0; e < layout.MaxVolumes; e++)
        {
            var entry = new ReadOnlySpan<byte>(_meta + layout.VolumeByte(e), ReplicaStoreLayout.VolumeEntrySize);
            if (!CheckEntry(entry, "volume table", e))
            {
                continue;
            }

            if ((BinaryPrimitives.ReadUInt32LittleEndian(entry[16..]) & 1) != 0)
            {
                ulong id = BinaryPrimitives.ReadUInt64LittleEndian(entry);
                _volumes[id] = e;
                _volumeEpoch[e] = BinaryPrimitives.ReadUInt64LittleEndian(entry[8..]);
            }
        }

        for (int e = layout.MaxVolumes - 1; e >= 0; e--)
        {
            if (!IsVolumeEntryUsed(e))
            {
                _freeVolumeEntries.Push(e);
            }
        }

        int slots = (int)layout.SlotCount;
        for (int s = 0; s < slots; s++)
        {
            var entry = new ReadOnlySpan<byte>(_meta + layout.AllocByte(s), ReplicaStoreLayout.AllocEntrySize);
            if (CheckEntry(entry, "allocation table", s) && (BinaryPrimitives.ReadUInt32LittleEndian(entry[20..]) & 1) != 0)
            {
                ulong volume = BinaryPrimitives.ReadUInt64LittleEndian(entry);
                long extent = BinaryPrimitives.ReadInt64LittleEndian(entry[8..]);
                if (extent < 0 || !_extents.TryAdd((volume, extent), s))
                {
                    throw new InvalidDataException($"The replica store on '{Device.Name}' has a bad allocation entry for slot {s} (volume {volume}, extent {extent}).");
                }

                _slotVolume[s] = volume;
                _slotExtent[s] = extent;
                _slotState[s] = 1;
            }
            else
            {
                // A free slot carries no activity-log bits and no checksums (a drop clears them before it frees the
                // allocation entry); clear them in memory in any case, so that a new extent starts empty.
                *(ulong*)(_meta + layout.LogByte(s)) = 0;
                NativeMemory.Clear(_meta + layout.ChecksumByte(layout.ChecksumIndex(s, 0)), (nuint)(layout.BlocksPerExtent * ReplicaStoreLayout.ChecksumSize));
            }
        }

        for (int s = slots - 1; s >= 0; s--)
        {
            if (_slotState[s] == 0)
            {
                _freeSlots[_freeCount++] = s;
            }
        }
    }

    private unsafe bool IsVolumeEntryUsed(int e) => (BinaryPrimitives.ReadUInt32LittleEndian(new ReadOnlySpan<byte>(_meta + _layout.VolumeByte(e) + 16, 4)) & 1) != 0;

    private bool CheckEntry(ReadOnlySpan<byte> entry, string table, int index)
    {
        if (entry.IndexOfAnyExcept((byte)0) < 0)
        {
            return false;
        }

        if (BinaryPrimitives.ReadUInt32LittleEndian(entry[28..]) != Crc32C.Compute(entry[..28]))
        {
            throw new InvalidDataException($"The replica store on '{Device.Name}' has a damaged {table} entry {index} (checksum mismatch).");
        }

        return true;
    }

    private async Task RecoverAsync(AlignedBuffer buffer, CancellationToken cancellationToken)
    {
        var layout = _layout;
        int regionSize = (int)layout.RegionSize;
        int blocksPerRegion = regionSize / ReplicaGeometry.BlockSize;
        int regionsPerRead = Math.Max(1, buffer.Length / regionSize);
        var dirtyPages = new SortedSet<int>();
        long torn = 0;
        int dirtyExtents = 0;
        for (int s = 0; s < (int)layout.SlotCount; s++)
        {
            ulong mask = LogMask(s);
            if (_slotState[s] != 1 || mask == 0)
            {
                continue;
            }

            dirtyExtents++;
            for (int r = 0; r < ReplicaGeometry.RegionsPerExtent; r++)
            {
                if ((mask & (1UL << r)) == 0)
                {
                    continue;
                }

                // Read runs of dirty regions together.
                int run = 1;
                while (run < regionsPerRead && r + run < ReplicaGeometry.RegionsPerExtent && (mask & (1UL << (r + run))) != 0)
                {
                    run++;
                }

                cancellationToken.ThrowIfCancellationRequested();
                await Device.ReadAsync(layout.SlotOffset(s) + ((long)r * regionSize), buffer.Memory[..(run * regionSize)], cancellationToken).ConfigureAwait(false);
                torn += Reconcile(s, r * blocksPerRegion, run * blocksPerRegion, buffer, dirtyPages);
                r += run - 1;
            }
        }

        foreach (int page in dirtyPages)
        {
            CopyPage(page, buffer.Span);
            await Device.WriteAsync(layout.PageOffset(page), buffer.Memory[..ReplicaStoreLayout.PageSize], BlockRequestFlags.None, cancellationToken).ConfigureAwait(false);
        }

        if (dirtyPages.Count > 0)
        {
            await Device.FlushAsync(cancellationToken).ConfigureAwait(false);
        }

        if (torn > 0)
        {
            Stats.AddTornBlocks(torn);
            StorageLog.TornBlocksReconciled(_logger, StoreId, torn);
        }

        StorageLog.Opened(_logger, StoreId, Device.Name, _extents.Count, layout.SlotCount, _volumes.Count, dirtyExtents);
    }

    private unsafe ulong LogMask(int slot) => *(ulong*)(_meta + _layout.LogByte(slot));

    private unsafe void CopyIntoImage(long at, ReadOnlySpan<byte> data) => data.CopyTo(new Span<byte>(_meta + at, data.Length));

    private unsafe void CopyPage(int page, Span<byte> into)
        => new ReadOnlySpan<byte>(_meta + ((long)page * ReplicaStoreLayout.PageSize), ReplicaStoreLayout.PageSize).CopyTo(into);

    /// <summary>Recomputes the checksums of the blocks in <paramref name="buffer"/> (read from an activity-log region)
    /// that do not match their data: blocks torn by unacknowledged writes.</summary>
    private unsafe int Reconcile(int slot, int firstBlock, int blocks, AlignedBuffer buffer, SortedSet<int> dirtyPages)
    {
        int torn = 0;
        for (int b = 0; b < blocks; b++)
        {
            long index = _layout.ChecksumIndex(slot, firstBlock + b);
            uint* stored = (uint*)(_meta + _layout.ChecksumByte(index));
            if (*stored == 0)
            {
                continue; // never written since allocated: reads as zeros whatever the device holds
            }

            uint actual = Crc32C.Compute(buffer.Pointer + ((long)b * ReplicaGeometry.BlockSize), ReplicaGeometry.BlockSize);
            if (actual != *stored)
            {
                *stored = actual; // (a real checksum of 0 reads back as "unwritten, but the data checks": served)
                dirtyPages.Add(_layout.ChecksumPage(index));
                torn++;
            }
        }

        return torn;
    }
}
