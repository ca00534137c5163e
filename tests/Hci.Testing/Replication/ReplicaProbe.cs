using System.Runtime.InteropServices;
using Hci.Core.Replication;

namespace Hci.Testing.Replication;

/// <summary>
/// Reads and writes one node's replica store directly, on the calling thread, bypassing any volume: what tests use
/// to compare replicas, to plant a stale or diverging copy, or to play an old owner.
/// </summary>
public sealed unsafe class ReplicaProbe : IDisposable, IReplicaCompletionHandler
{
    private readonly ReplicaChannel _channel;
    private readonly ReplicaRequest _request = new(1);
    private readonly byte* _buffer;
    private readonly int _capacity;
    private bool _done;

    /// <summary>Opens a channel to <paramref name="nodeId"/> through <paramref name="connector"/>.</summary>
    public ReplicaProbe(IReplicaConnector connector, string nodeId, int capacity = 4 << 20)
    {
        _channel = connector.Open(nodeId, null);
        _capacity = capacity;
        _buffer = (byte*)NativeMemory.AlignedAlloc((nuint)capacity, 4096);
    }

    /// <summary>Reads a range of an extent; the status and the bytes.</summary>
    public (ReplicaStatus Status, byte[] Data) Read(ulong volume, long extent, long offset, int length, ulong epoch = 1, int device = 0)
    {
        var status = Run(ReplicaOperation.Read, volume, extent, offset, length, epoch, device, null);
        return (status, new Span<byte>(_buffer, length).ToArray());
    }

    /// <summary>Writes a range of an extent.</summary>
    public ReplicaStatus Write(ulong volume, long extent, long offset, ReadOnlySpan<byte> data, ulong epoch = 1, int device = 0)
        => Run(ReplicaOperation.Write, volume, extent, offset, data.Length, epoch, device, data);

    /// <summary>The stored checksums of a range, one per 4 KiB block.</summary>
    public (ReplicaStatus Status, uint[] Checksums) Checksums(ulong volume, long extent, long offset, int length, ulong epoch = 1, int device = 0)
    {
        var sums = new uint[length / ReplicaGeometry.BlockSize];
        fixed (uint* p = sums)
        {
            _request.Reset();
            _request.Checksums = p;
            var status = Run(ReplicaOperation.ReadChecksums, volume, extent, offset, length, epoch, device, null, keep: true);
            return (status, sums);
        }
    }

    /// <summary>Runs an operation with no data.</summary>
    public ReplicaStatus Simple(ReplicaOperation operation, ulong volume, long extent = 0, ulong argument = 0, ulong epoch = 1, int device = 0)
    {
        _request.Reset();
        _request.Argument = argument;
        return Run(operation, volume, extent, 0, 0, epoch, device, null, keep: true);
    }

    /// <summary>The volume's extents in the device's activity log, each with the mask of its dirty regions.</summary>
    public Dictionary<long, ulong> DirtyRegions(ulong volume, ulong epoch = 1, int device = 0)
    {
        int capacity = _capacity / 16 * 16;
        var status = Run(ReplicaOperation.GetDirtyRegions, volume, 0, 0, capacity, epoch, device, null);
        if (status != ReplicaStatus.Ok)
        {
            throw new InvalidOperationException($"GetDirtyRegions on {_channel.NodeId} answered {status}");
        }

        var dirty = new Dictionary<long, ulong>();
        var pairs = (long*)_buffer;
        for (int i = 0; i < Math.Min(_request.Result, capacity / 16); i++)
        {
            dirty[pairs[2 * i]] = (ulong)pairs[(2 * i) + 1];
        }

        return dirty;
    }

    /// <summary>The observed epoch of the last answer.</summary>
    public ulong ObservedEpoch => _request.ObservedEpoch;

    private ReplicaStatus Run(ReplicaOperation operation, ulong volume, long extent, long offset, int length, ulong epoch, int device, ReadOnlySpan<byte> data, bool keep = false)
    {
        if (length > _capacity)
        {
            throw new ArgumentOutOfRangeException(nameof(length));
        }

        if (!keep)
        {
            _request.Reset();
        }

        var argument = _request.Argument;
        var checksums = _request.Checksums;
        _request.Operation = operation;
        _request.VolumeId = volume;
        _request.Extent = extent;
        _request.Offset = offset;
        _request.Device = device;
        _request.Epoch = epoch;
        _request.Argument = argument;
        _request.Checksums = checksums;
        _request.Handler = this;
        if (operation is ReplicaOperation.Read or ReplicaOperation.Write or ReplicaOperation.GetDirtyRegions)
        {
            data.CopyTo(new Span<byte>(_buffer, length));
            _request.AddSegment(_buffer, length);
        }
        else
        {
            _request.Length = length;
        }

        _done = false;
        _channel.Submit(_request);
        Deadline.WaitUntil(() =>
        {
            _channel.Poll();
            return _done;
        }, $"the replica on {_channel.NodeId} to answer {operation}");
        return _request.Status;
    }

    void IReplicaCompletionHandler.OnReplicaCompleted(ReplicaRequest request) => _done = true;

    /// <inheritdoc/>
    public void Dispose()
    {
        _channel.Dispose();
        _request.Dispose();
        NativeMemory.AlignedFree(_buffer);
    }
}
