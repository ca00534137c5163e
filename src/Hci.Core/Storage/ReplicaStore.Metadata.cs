using System.Buffers.Binary;
using Hci.Core.Blocks;
using Hci.Core.Replication;

namespace Hci.Core.Storage;

/// <summary>The store's shared metadata: changed in memory under a short lock (never across I/O), written back page by
/// page by whichever queue finds a page to write, one write per page at a time (so pages never go out of order), and
/// waited for by version.</summary>
public sealed unsafe partial class ReplicaStore
{
    // ---------------------------------------------------------------- pages

    /// <summary>Whether page <paramref name="page"/> holds version <paramref name="version"/> on the device (durably,
    /// when <paramref name="durable"/>): 1 yes, 0 not yet, a negative errno when its write failed.</summary>
    internal int PageState(int page, long version, bool durable)
    {
        long done = durable ? Volatile.Read(ref _pageDurable[page]) : Volatile.Read(ref _pageWritten[page]);
        if (done >= version)
        {
            return 1;
        }

        return Volatile.Read(ref _pageFailed[page]) >= version ? -Errno.EIO : 0;
    }

    /// <summary>Claims the write of <paramref name="page"/> when it needs one and none is in flight, copying its
    /// current content into <paramref name="into"/>.</summary>
    internal bool TryStartPageWrite(int page, byte* into, out long version, out bool fua)
    {
        lock (_sync)
        {
            version = 0;
            fua = false;
            if (_pageWriting[page] != 0 || _meta == null)
            {
                return false;
            }

            long current = _pageVersion[page];
            long failed = _pageFailed[page];
            bool needWrite = current > _pageWritten[page] && current > failed;
            bool needFua = _pageFuaNeed[page] > _pageDurable[page] && _pageFuaNeed[page] > failed;
            if (!needWrite && !needFua)
            {
                return false;
            }

            Buffer.MemoryCopy(_meta + ((long)page * ReplicaStoreLayout.PageSize), into, ReplicaStoreLayout.PageSize, ReplicaStoreLayout.PageSize);
            _pageWriting[page] = current;
            version = current;
            fua = needFua;
            return true;
        }
    }

    /// <summary>Records the end of a page write started by <see cref="TryStartPageWrite"/>.</summary>
    internal void OnPageWritten(int page, long version, bool fua, int errno)
    {
        lock (_sync)
        {
            _pageWriting[page] = 0;
            if (errno == 0)
            {
                Volatile.Write(ref _pageWritten[page], Math.Max(_pageWritten[page], version));
                if (fua)
                {
                    Volatile.Write(ref _pageDurable[page], Math.Max(_pageDurable[page], version));
                }
            }
            else
            {
                Volatile.Write(ref _pageFailed[page], Math.Max(_pageFailed[page], version));
            }
        }

        if (errno != 0)
        {
            StorageLog.MetadataWriteFailed(_logger, StoreId, page, errno);
        }
    }

    internal long PageDeviceOffset(int page) => _layout.PageOffset(page);

    private long TouchPage(int page, bool fua)
    {
        long v = ++_pageVersion[page];
        if (fua)
        {
            _pageFuaNeed[page] = v;
        }

        return v;
    }

    // ---------------------------------------------------------------- epochs

    /// <summary>Fences: refuses an older epoch, raises the volume's to a newer one (durably: the op waits for it).</summary>
    internal ReplicaStatus Admit(StoreOp op)
    {
        var r = op.Request;
        ulong volume = r.VolumeId;
        ulong epoch = r.Epoch;
        bool raised = false;
        lock (_sync)
        {
            bool known = _volumes.TryGetValue(volume, out int e);
            if (!known && r.Operation == ReplicaOperation.ListExtents)
            {
                // A store that never saw the volume holds none of its extents. Asking must not make it known: an owner
                // asks every store when it looks for orphaned slots, and each volume the store knows takes an entry of
                // its volume table and a durable metadata write.
                return ReplicaStatus.Ok;
            }

            ulong current = known ? _volumeEpoch[e] : 0;
            if (epoch < current)
            {
                r.ObservedEpoch = current;
                Stats.CountStaleEpoch();
                return ReplicaStatus.StaleEpoch;
            }

            if (epoch > current)
            {
                if (!known)
                {
                    if (!_freeVolumeEntries.TryPop(out e))
                    {
                        return ReplicaStatus.NoSpace;
                    }

                    _volumes[volume] = e;
                }

                _volumeEpoch[e] = epoch;
                var entry = new Span<byte>(_meta + _layout.VolumeByte(e), ReplicaStoreLayout.VolumeEntrySize);
                entry.Clear();
                BinaryPrimitives.WriteUInt64LittleEndian(entry, volume);
                BinaryPrimitives.WriteUInt64LittleEndian(entry[8..], epoch);
                BinaryPrimitives.WriteUInt32LittleEndian(entry[16..], 1);
                BinaryPrimitives.WriteUInt32LittleEndian(entry[28..], Crc32C.Compute(entry[..28]));
                _volumeVersion[e] = TouchPage(_layout.VolumePage(e), fua: true);
                raised = true;
            }

            if (known || raised)
            {
                op.AddWait(_layout.VolumePage(e), _volumeVersion[e], durable: true);
            }
        }

        if (raised)
        {
            StorageLog.Fenced(_logger, StoreId, volume, epoch);
        }

        return ReplicaStatus.Ok;
    }

    // ---------------------------------------------------------------- reads and writes

    /// <summary>The slot of an extent, or -1; with the slot's write sequence (it moves at every write's start and end).</summary>
    internal int FindSlot(ulong volume, long extent, out long writeSeq)
    {
        lock (_sync)
        {
            if (_extents.TryGetValue((volume, extent), out int slot))
            {
                writeSeq = _slotWriteSeq[slot];
                return slot;
            }

            writeSeq = 0;
            return -1;
        }
    }

    /// <summary>True when writes were in flight on the slot, or started or ended, since <paramref name="writeSeq"/>.</summary>
    internal bool SlotChangedSince(int slot, long writeSeq)
    {
        lock (_sync)
        {
            return _slotWritesInFlight[slot] != 0 || _slotWriteSeq[slot] != writeSeq;
        }
    }

    internal uint StoredChecksum(int slot, int block) => Volatile.Read(ref *(uint*)(_meta + _layout.ChecksumByte(_layout.ChecksumIndex(slot, block))));

    internal long SlotOffset(int slot) => _layout.SlotOffset(slot);

    /// <summary>Finds or allocates the extent's slot and marks the write's regions in the activity log; the op waits for
    /// the allocation entry and the log (durable) before its data goes out. Pair with <see cref="EndWrite"/>.</summary>
    internal ReplicaStatus BeginWrite(StoreOp op, int firstBlock, int blocks)
    {
        var r = op.Request;
        var layout = _layout;
        lock (_sync)
        {
            if (!_extents.TryGetValue((r.VolumeId, r.Extent), out int slot))
            {
                if (_freeCount == 0)
                {
                    return ReplicaStatus.NoSpace;
                }

                slot = _freeSlots[--_freeCount];
                _slotState[slot] = 1;
                _slotVolume[slot] = r.VolumeId;
                _slotExtent[slot] = r.Extent;
                _extents[(r.VolumeId, r.Extent)] = slot;
                WriteAllocEntry(slot, r.VolumeId, r.Extent, used: true);
                _slotAllocVersion[slot] = TouchPage(layout.AllocPage(slot), fua: true);
            }

            op.AddWait(layout.AllocPage(slot), _slotAllocVersion[slot], durable: true);
            long blocksPerRegion = layout.RegionSize / ReplicaGeometry.BlockSize;
            int firstRegion = (int)(firstBlock / blocksPerRegion);
            int lastRegion = (int)((firstBlock + blocks - 1) / blocksPerRegion);
            ulong mask = (lastRegion == 63 ? ulong.MaxValue : (1UL << (lastRegion + 1)) - 1) & ~((1UL << firstRegion) - 1);
            ulong* log = (ulong*)(_meta + layout.LogByte(slot));
            if ((mask & ~*log) != 0)
            {
                *log |= mask;
                _slotLogVersion[slot] = TouchPage(layout.LogPage(slot), fua: true);
            }

            op.AddWait(layout.LogPage(slot), _slotLogVersion[slot], durable: true);
            _slotWritesInFlight[slot]++;
            _slotWriteSeq[slot]++;
            op.Slot = slot;
        }

        return ReplicaStatus.Ok;
    }

    /// <summary>Records a write's checksums in memory. A block's first write since its slot was allocated (stored
    /// checksum 0, "unwritten") waits for its checksum page to be durable, whatever the write's own durability: a crash
    /// that brought the 0 back would read an acknowledged write as zeros. An overwrite waits for nothing more than that
    /// (the page's first checksums durable): its page is written back later (<see cref="TakeDeferredPages"/>), and until
    /// then its region in the activity log (durable before the data went out, kept until <see cref="PrepareClean"/> has
    /// the page durable) tells recovery to recompute the checksum of a block whose data is newer than its page. One
    /// device write per replica write instead of two, once every block has been written.</summary>
    internal void CommitChecksums(StoreOp op, int firstBlock, int blocks)
    {
        var layout = _layout;
        lock (_sync)
        {
            long first = layout.ChecksumIndex(op.Slot, firstBlock);
            uint* at = (uint*)(_meta + layout.ChecksumByte(first));
            int firstPage = layout.ChecksumPage(first);
            int lastPage = layout.ChecksumPage(first + blocks - 1);
            int i = 0;
            for (int p = firstPage; p <= lastPage; p++)
            {
                bool fresh = false;
                for (; i < blocks && layout.ChecksumPage(first + i) == p; i++)
                {
                    fresh |= at[i] == 0;
                    at[i] = op.Checksums[i];
                }

                long version = TouchPage(p, fua: false);
                if (fresh)
                {
                    _pageFresh[p] = version;
                    _pageFuaNeed[p] = version;
                    op.AddWait(p, version, durable: true);
                    continue;
                }

                if (_pageDurable[p] < _pageFresh[p])
                {
                    op.AddWait(p, _pageFresh[p], durable: true); // the page's first checksums are still on their way
                }

                if (!_isDeferred[p])
                {
                    _isDeferred[p] = true;
                    if (_deferredCount == 0)
                    {
                        _deferredSince = Environment.TickCount64;
                    }

                    _deferred[_deferredCount++] = p;
                }
            }
        }
    }

    /// <summary>How many checksum pages wait for write-back, and since when (<see cref="Environment.TickCount64"/>).</summary>
    internal int DeferredPages(out long since)
    {
        since = Volatile.Read(ref _deferredSince);
        return Volatile.Read(ref _deferredCount);
    }

    /// <summary>Moves the checksum pages that wait for write-back into <paramref name="into"/> (as many as fit) and
    /// returns how many; the caller writes each (a page already written since is skipped by the writer).</summary>
    internal int TakeDeferredPages(Span<int> into)
    {
        lock (_sync)
        {
            int n = Math.Min(into.Length, _deferredCount);
            int from = _deferredCount - n;
            for (int i = 0; i < n; i++)
            {
                int page = _deferred[from + i];
                _isDeferred[page] = false;
                into[i] = page;
            }

            _deferredCount = from;
            _deferredSince = Environment.TickCount64;
            return n;
        }
    }

    /// <summary>Ends what <see cref="BeginWrite"/> began.</summary>
    internal void EndWrite(int slot)
    {
        lock (_sync)
        {
            _slotWritesInFlight[slot]--;
            _slotWriteSeq[slot]++;
        }
    }

    private void WriteAllocEntry(int slot, ulong volume, long extent, bool used)
    {
        var entry = new Span<byte>(_meta + _layout.AllocByte(slot), ReplicaStoreLayout.AllocEntrySize);
        uint generation = BinaryPrimitives.ReadUInt32LittleEndian(entry[16..]) + (used ? 1u : 0u);
        entry.Clear();
        if (used)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(entry, volume);
            BinaryPrimitives.WriteInt64LittleEndian(entry[8..], extent);
        }

        BinaryPrimitives.WriteUInt32LittleEndian(entry[16..], generation);
        BinaryPrimitives.WriteUInt32LittleEndian(entry[20..], used ? 1u : 0u);
        BinaryPrimitives.WriteUInt32LittleEndian(entry[28..], Crc32C.Compute(entry[..28]));
    }

    // ---------------------------------------------------------------- activity log and lists

    /// <summary>The first step of a mark-clean: the op waits for the extent's checksum pages to be durable (written
    /// with force unit access), since once its regions leave the activity log recovery trusts those pages. Records the
    /// slot and its write sequence for <see cref="MarkClean"/>; false when the extent has no slot (nothing to clean).</summary>
    internal bool PrepareClean(StoreOp op)
    {
        var r = op.Request;
        var layout = _layout;
        lock (_sync)
        {
            if (!_extents.TryGetValue((r.VolumeId, r.Extent), out int slot))
            {
                return false;
            }

            long first = layout.ChecksumIndex(slot, 0);
            int lastPage = layout.ChecksumPage(first + layout.BlocksPerExtent - 1);
            for (int p = layout.ChecksumPage(first); p <= lastPage; p++)
            {
                long v = _pageVersion[p];
                if (v > _pageDurable[p])
                {
                    _pageFuaNeed[p] = Math.Max(_pageFuaNeed[p], v);
                    op.AddWait(p, v, durable: true);
                }
            }

            op.Slot = slot;
            op.SlotSeq = _slotWriteSeq[slot];
            return true;
        }
    }

    /// <summary>Clears regions of an extent from the activity log; the op waits for the log page. Only when no write
    /// started or ended on the slot since <see cref="PrepareClean"/> (a write the volume did not hold back): otherwise
    /// the regions stay dirty, which costs recovery a look and loses nothing.</summary>
    internal void MarkClean(StoreOp op, ulong mask)
    {
        var r = op.Request;
        lock (_sync)
        {
            if (!_extents.TryGetValue((r.VolumeId, r.Extent), out int slot) || slot != op.Slot)
            {
                return;
            }

            if (_slotWritesInFlight[slot] != 0 || _slotWriteSeq[slot] != op.SlotSeq)
            {
                return;
            }

            ulong* log = (ulong*)(_meta + _layout.LogByte(slot));
            if ((*log & mask) != 0)
            {
                *log &= ~mask;
                op.AddWait(_layout.LogPage(slot), TouchPage(_layout.LogPage(slot), fua: true), durable: true);
            }
            else
            {
                // Clean already; what made it so may still be on its way to the device.
                op.AddWait(_layout.LogPage(slot), _pageVersion[_layout.LogPage(slot)], durable: true);
            }
        }
    }

    /// <summary>Writes the volume's extent indices (as many as fit) and returns how many it has.</summary>
    internal int ListExtents(ulong volume, long* into, int capacity)
    {
        int count = 0;
        lock (_sync)
        {
            for (int s = 0; s < _slotState.Length; s++)
            {
                if (_slotState[s] == 1 && _slotVolume[s] == volume)
                {
                    if (count < capacity)
                    {
                        BinaryPrimitives.WriteInt64LittleEndian(new Span<byte>(into + count, 8), _slotExtent[s]);
                    }

                    count++;
                }
            }
        }

        return count;
    }

    /// <summary>Writes (extent, region mask) pairs of the volume's dirty extents (as many as fit) and returns how many
    /// it has.</summary>
    internal int ListDirty(ulong volume, long* into, int capacityPairs)
    {
        int count = 0;
        lock (_sync)
        {
            for (int s = 0; s < _slotState.Length; s++)
            {
                ulong mask = *(ulong*)(_meta + _layout.LogByte(s));
                if (_slotState[s] == 1 && _slotVolume[s] == volume && mask != 0)
                {
                    if (count < capacityPairs)
                    {
                        BinaryPrimitives.WriteInt64LittleEndian(new Span<byte>(into + (2 * count), 8), _slotExtent[s]);
                        BinaryPrimitives.WriteUInt64LittleEndian(new Span<byte>(into + (2 * count) + 1, 8), mask);
                    }

                    count++;
                }
            }
        }

        return count;
    }

    /// <summary>Copies stored checksums (0 "never written" reported as the zero block's).</summary>
    internal bool CopyChecksums(ulong volume, long extent, int firstBlock, int blocks, uint* into)
    {
        int slot = FindSlot(volume, extent, out _);
        for (int i = 0; i < blocks; i++)
        {
            uint c = slot < 0 ? 0 : StoredChecksum(slot, firstBlock + i);
            into[i] = c == 0 ? Crc32C.ZeroBlock : c;
        }

        return slot >= 0;
    }

    // ---------------------------------------------------------------- drops

    /// <summary>Starts dropping one extent (or, with <paramref name="wholeVolume"/>, every extent of the volume): takes
    /// them out of the map, clears their checksums and log bits (the op waits for those pages, durably).</summary>
    internal void BeginDrop(StoreOp op, bool wholeVolume)
    {
        var r = op.Request;
        var layout = _layout;
        lock (_sync)
        {
            if (wholeVolume)
            {
                for (int s = 0; s < _slotState.Length; s++)
                {
                    if (_slotState[s] == 1 && _slotVolume[s] == r.VolumeId)
                    {
                        op.AddSlot(s);
                    }
                }
            }
            else if (_extents.TryGetValue((r.VolumeId, r.Extent), out int slot))
            {
                op.AddSlot(slot);
            }

            foreach (int s in op.Slots)
            {
                _slotState[s] = 2;
                _extents.Remove((_slotVolume[s], _slotExtent[s]));
                long first = layout.ChecksumIndex(s, 0);
                new Span<byte>(_meta + layout.ChecksumByte(first), layout.BlocksPerExtent * ReplicaStoreLayout.ChecksumSize).Clear();
                int lastPage = layout.ChecksumPage(first + layout.BlocksPerExtent - 1);
                for (int p = layout.ChecksumPage(first); p <= lastPage; p++)
                {
                    op.AddWait(p, TouchPage(p, fua: true), durable: true);
                }

                *(ulong*)(_meta + layout.LogByte(s)) = 0;
                op.AddWait(layout.LogPage(s), TouchPage(layout.LogPage(s), fua: true), durable: true);
            }
        }
    }

    /// <summary>Frees the allocation entries of a drop's slots (the op waits for them, durably).</summary>
    internal void ClearAllocations(StoreOp op)
    {
        lock (_sync)
        {
            foreach (int s in op.Slots)
            {
                WriteAllocEntry(s, 0, 0, used: false);
                op.AddWait(_layout.AllocPage(s), TouchPage(_layout.AllocPage(s), fua: true), durable: true);
            }
        }
    }

    /// <summary>Returns a drop's slots to the free list once no write is in flight on them.</summary>
    internal bool TryReleaseSlots(StoreOp op)
    {
        lock (_sync)
        {
            foreach (int s in op.Slots)
            {
                if (_slotWritesInFlight[s] != 0)
                {
                    return false;
                }
            }

            foreach (int s in op.Slots)
            {
                _slotState[s] = 0;
                _slotVolume[s] = 0;
                _slotExtent[s] = 0;
                _freeSlots[_freeCount++] = s;
            }
        }

        return true;
    }

    /// <summary>Forgets a volume's table entry (and its epoch); the op waits for the page, durably.</summary>
    internal void ForgetVolume(StoreOp op)
    {
        ulong volume = op.Request.VolumeId;
        lock (_sync)
        {
            if (!_volumes.Remove(volume, out int e))
            {
                return;
            }

            _volumeEpoch[e] = 0;
            new Span<byte>(_meta + _layout.VolumeByte(e), ReplicaStoreLayout.VolumeEntrySize).Clear();
            _volumeVersion[e] = TouchPage(_layout.VolumePage(e), fua: true);
            op.AddWait(_layout.VolumePage(e), _volumeVersion[e], durable: true);
            _freeVolumeEntries.Push(e);
        }
    }
}
