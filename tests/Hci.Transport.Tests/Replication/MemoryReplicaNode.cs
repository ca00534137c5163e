using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Hci.Core.Reactors;
using Hci.Core.Replication;
using Hci.Transport.Iscsi;

namespace Hci.Transport.Tests.Replication;

/// <summary>
/// A node's replica stores in memory, for the protocol's tests: extents of 4 MiB per (device, volume, extent),
/// per-block CRC-32C, epochs (fencing), dirty regions. Its channels answer on their owner's next poll (never inside
/// Submit), in reverse order of submission so that answers come back out of order, and count every request that
/// reaches them. <see cref="Hold"/> keeps answers back (timeouts).
/// </summary>
internal sealed unsafe class MemoryReplicaNode : IReplicaConnector
{
    public const int Devices = 4;
    public const long ExtentSize = 4L << 20;
    private const int Blocks = (int)(ExtentSize / ReplicaGeometry.BlockSize);

    private readonly Lock _lock = new();
    private readonly Dictionary<Key, Extent> _extents = [];
    private readonly Dictionary<ulong, ulong> _epochs = [];
    private long _requests;

    /// <summary>Requests that reached any channel of this node.</summary>
    public long Requests => Interlocked.Read(ref _requests);

    /// <summary>While true, answers wait.</summary>
    public volatile bool Hold;

    public string? LastOpenedFor { get; private set; }

    public ReplicaChannel Open(string nodeId, Reactor? reactor)
    {
        LastOpenedFor = nodeId;
        return new Channel(this, nodeId, reactor);
    }

    /// <summary>Flips a byte of a stored block without updating its checksum (a rotten block).</summary>
    public void Corrupt(int device, ulong volume, long extent, long offset)
    {
        lock (_lock)
        {
            _extents[new Key(device, volume, extent)].Data[offset] ^= 0xFF;
        }
    }

    private void Execute(ReplicaRequest r)
    {
        Interlocked.Increment(ref _requests);
        lock (_lock)
        {
            r.Status = Run(r, out int result);
            r.Result = result;
        }
    }

    private ReplicaStatus Run(ReplicaRequest r, out int result)
    {
        result = 0;
        if (r.Device is < 0 or >= Devices)
        {
            return ReplicaStatus.Invalid;
        }

        _epochs.TryGetValue(r.VolumeId, out ulong epoch);
        if (r.Epoch < epoch)
        {
            r.ObservedEpoch = epoch;
            return ReplicaStatus.StaleEpoch;
        }

        r.ObservedEpoch = Math.Max(epoch, r.Epoch);
        if (r.Epoch > epoch)
        {
            _epochs[r.VolumeId] = r.Epoch;
        }

        bool ranged = r.Operation is ReplicaOperation.Read or ReplicaOperation.Write or ReplicaOperation.ReadChecksums;
        if (ranged && (r.Offset + r.Length > ExtentSize || r.Offset % ReplicaGeometry.BlockSize != 0 || r.Length % ReplicaGeometry.BlockSize != 0))
        {
            return ReplicaStatus.Invalid;
        }

        var key = new Key(r.Device, r.VolumeId, r.Extent);
        _extents.TryGetValue(key, out var extent);
        int first = (int)(r.Offset / ReplicaGeometry.BlockSize);
        int blocks = r.Length / ReplicaGeometry.BlockSize;
        switch (r.Operation)
        {
            case ReplicaOperation.Write:
                if (extent == null)
                {
                    extent = new Extent();
                    _extents[key] = extent;
                }

                Gather(r, extent.Data.AsSpan((int)r.Offset, r.Length));
                for (int i = 0; i < blocks; i++)
                {
                    extent.Sums[first + i] = r.Checksums != null ? r.Checksums[i] : IscsiDigest.Compute(extent.Data.AsSpan((first + i) * ReplicaGeometry.BlockSize, ReplicaGeometry.BlockSize));
                }

                extent.Dirty |= RegionMask(r.Offset, r.Length);
                result = r.Length;
                return ReplicaStatus.Ok;
            case ReplicaOperation.Read:
                r.Allocated = extent != null;
                if (extent == null)
                {
                    foreach (var s in r.Segments)
                    {
                        new Span<byte>((void*)s.Address, (int)s.Length).Clear();
                    }

                    result = r.Length;
                    return ReplicaStatus.Ok;
                }

                for (int i = 0; i < blocks; i++)
                {
                    if (IscsiDigest.Compute(extent.Data.AsSpan((first + i) * ReplicaGeometry.BlockSize, ReplicaGeometry.BlockSize)) != extent.Sums[first + i])
                    {
                        return ReplicaStatus.ChecksumMismatch;
                    }

                    if (r.Checksums != null)
                    {
                        r.Checksums[i] = extent.Sums[first + i];
                    }
                }

                Scatter(extent.Data.AsSpan((int)r.Offset, r.Length), r);
                result = r.Length;
                return ReplicaStatus.Ok;
            case ReplicaOperation.ReadChecksums:
                for (int i = 0; i < blocks; i++)
                {
                    r.Checksums[i] = extent?.Sums[first + i] ?? ZeroSum;
                }

                result = r.Length;
                return ReplicaStatus.Ok;
            case ReplicaOperation.ListExtents:
            case ReplicaOperation.GetDirtyRegions:
            {
                bool dirty = r.Operation == ReplicaOperation.GetDirtyRegions;
                Span<byte> output = new byte[r.Length];
                int at = 0;
                int count = 0;
                foreach (var (k, e) in _extents)
                {
                    if (k.Device != r.Device || k.Volume != r.VolumeId || (dirty && e.Dirty == 0))
                    {
                        continue;
                    }

                    count++;
                    int entry = dirty ? 16 : 8;
                    if (at + entry <= output.Length)
                    {
                        BinaryPrimitives.WriteInt64LittleEndian(output[at..], k.Extent);
                        if (dirty)
                        {
                            BinaryPrimitives.WriteUInt64LittleEndian(output[(at + 8)..], e.Dirty);
                        }

                        at += entry;
                    }
                }

                Scatter(output, r);
                result = count;
                return ReplicaStatus.Ok;
            }

            case ReplicaOperation.MarkClean:
                if (extent != null)
                {
                    extent.Dirty &= ~r.Argument;
                }

                return ReplicaStatus.Ok;
            case ReplicaOperation.DropExtent:
                _extents.Remove(key);
                return ReplicaStatus.Ok;
            case ReplicaOperation.DropVolume:
                DropVolume(r.Device, r.VolumeId); // not a lambda here: capturing r would allocate a closure on every call of Run

                return ReplicaStatus.Ok;
            default: // Flush, Fence: the epoch is taken above
                return ReplicaStatus.Ok;
        }
    }

    private void DropVolume(int device, ulong volume)
    {
        foreach (var k in _extents.Keys.Where(k => k.Device == device && k.Volume == volume).ToList())
        {
            _extents.Remove(k);
        }
    }

    private static readonly uint ZeroSum = IscsiDigest.Compute(new byte[ReplicaGeometry.BlockSize]);

    private static ulong RegionMask(long offset, int length)
    {
        long region = ExtentSize / ReplicaGeometry.RegionsPerExtent;
        ulong mask = 0;
        for (long at = offset / region; at * region < offset + length; at++)
        {
            mask |= 1UL << (int)at;
        }

        return mask;
    }

    private static void Gather(ReplicaRequest r, Span<byte> into)
    {
        int at = 0;
        foreach (var s in r.Segments)
        {
            new ReadOnlySpan<byte>((void*)s.Address, (int)s.Length).CopyTo(into[at..]);
            at += (int)s.Length;
        }
    }

    private static void Scatter(ReadOnlySpan<byte> from, ReplicaRequest r)
    {
        int at = 0;
        foreach (var s in r.Segments)
        {
            int n = Math.Min((int)s.Length, from.Length - at);
            if (n <= 0)
            {
                break;
            }

            from.Slice(at, n).CopyTo(new Span<byte>((void*)s.Address, n));
            at += n;
        }
    }

    private readonly record struct Key(int Device, ulong Volume, long Extent);

    private sealed class Extent
    {
        public byte[] Data { get; } = new byte[ExtentSize];

        public uint[] Sums { get; } = Enumerable.Repeat(ZeroSum, Blocks).ToArray(); // unwritten blocks read as zeros

        public ulong Dirty { get; set; }
    }

    private sealed class Channel : ReplicaChannel, IPoller
    {
        private readonly MemoryReplicaNode _node;
        private readonly IDisposable? _polling;
        private readonly Stack<ReplicaRequest> _done = new(1024);

        public Channel(MemoryReplicaNode node, string nodeId, Reactor? reactor)
        {
            _node = node;
            NodeId = nodeId;
            _polling = reactor?.AddPoller(this);
        }

        public override string NodeId { get; }

        public override bool IsConnected => true;

        public override int InFlight => _done.Count;

        public override void Submit(ReplicaRequest request)
        {
            _node.Execute(request);
            _done.Push(request);
        }

        public override int Poll()
        {
            if (_node.Hold)
            {
                return 0;
            }

            int n = 0;
            while (_done.TryPop(out var r))
            {
                n++;
                r.Handler!.OnReplicaCompleted(r);
            }

            return n;
        }

        PollStatus IPoller.Poll() => Poll() > 0 ? PollStatus.Busy : PollStatus.Idle;

        protected override void Dispose(bool disposing)
        {
            _polling?.Dispose();
            while (_done.TryPop(out var r))
            {
                r.Status = ReplicaStatus.Unavailable;
                r.Handler!.OnReplicaCompleted(r);
            }
        }
    }
}
