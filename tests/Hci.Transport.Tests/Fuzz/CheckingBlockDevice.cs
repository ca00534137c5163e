using System.Runtime.InteropServices;
using Hci.Core.Blocks;
using Hci.Core.Modules;

namespace Hci.Transport.Tests.Fuzz;

/// <summary>
/// A memory device that checks every request that reaches it (after the queue's validation) against its own
/// geometry and records what it should never have been given: a range past the end, a transfer over the maximum,
/// segments that do not add up to the length, buffers that break the alignment it demands (O_DIRECT-like), and
/// buffers that lie partly inside a watched region (guest memory) and partly outside it.
/// </summary>
internal sealed unsafe class CheckingBlockDevice : BlockDevice
{
    private byte* _memory;

    public CheckingBlockDevice(int logicalBlockSize, long capacity, int maxTransfer, int maxSegments, int alignment)
        : base("checking", new BlockGeometry(logicalBlockSize, capacity, maxTransfer, maxSegments, alignment, queueCount: 1),
               BlockDeviceCapabilities.Flush | BlockDeviceCapabilities.ForceUnitAccess | BlockDeviceCapabilities.Discard
               | BlockDeviceCapabilities.DiscardZeroesData | BlockDeviceCapabilities.WriteZeroes | BlockDeviceCapabilities.PersistentData)
    {
        _memory = (byte*)NativeMemory.AllocZeroed((nuint)capacity);
    }

    /// <summary>What the device was given and should not have been; empty when all is well.</summary>
    public List<string> Violations { get; } = [];

    /// <summary>Requests that reached the device.</summary>
    public long Seen { get; private set; }

    /// <summary>A region every buffer must lie wholly inside or wholly outside (a bounce buffer), never across.</summary>
    public (nint Start, nint End) Watched { get; set; }

    public override string Engine => "checking";

    protected override BlockQueue CreateQueueCore(int depth) => new Queue(this);

    protected override void DisposeCore()
    {
        var memory = _memory;
        _memory = null;
        if (memory != null)
        {
            NativeMemory.Free(memory);
        }
    }

    private void Check(BlockRequest r)
    {
        Seen++;
        var g = Geometry;
        string what = $"{r.Operation} offset {r.Offset} length {r.Length} segments {r.SegmentCount}";
        if (r.Operation is BlockOperation.Flush)
        {
            return;
        }

        if (r.Offset < 0 || r.Length <= 0 || r.Offset > g.Capacity || r.Length > g.Capacity - r.Offset || ((r.Offset | r.Length) & (g.LogicalBlockSize - 1)) != 0)
        {
            Violations.Add($"out of range or misaligned: {what}");
        }

        if (r.Operation is BlockOperation.Read or BlockOperation.Write)
        {
            if (r.Length > g.MaxTransferBytes)
            {
                Violations.Add($"over the maximum transfer {g.MaxTransferBytes}: {what}");
            }

            long sum = 0;
            foreach (var s in r.Segments)
            {
                sum += s.Length;
                if (((s.Address | s.Length) & (g.BufferAlignment - 1)) != 0)
                {
                    Violations.Add($"segment 0x{s.Address:x}+{s.Length} breaks the {g.BufferAlignment}-byte alignment: {what}");
                }

                var (start, end) = Watched;
                bool inside = s.Address >= start && s.Address + s.Length <= end;
                bool outside = s.Address + s.Length <= start || s.Address >= end;
                if (end != 0 && !inside && !outside)
                {
                    Violations.Add($"segment 0x{s.Address:x}+{s.Length} straddles guest memory: {what}");
                }
            }

            if (sum != r.Length)
            {
                Violations.Add($"segments add up to {sum}: {what}");
            }
        }
    }

    private sealed class Queue(CheckingBlockDevice device) : SynchronousBlockQueue(device)
    {
        protected override void SubmitCore(BlockRequest request)
        {
            device.Check(request);
            byte* memory = device._memory;
            var g = device.Geometry;
            if (memory == null || request.Offset < 0 || request.Offset + request.Length > g.Capacity)
            {
                CompleteLater(request, -Errno.EIO, BlockError.Device);
                return;
            }

            byte* at = memory + request.Offset;
            switch (request.Operation)
            {
                case BlockOperation.Read:
                case BlockOperation.Write:
                    if (request.Length > g.MaxTransferBytes)
                    {
                        CompleteLater(request, -Errno.EIO, BlockError.Device);
                        return;
                    }

                    foreach (var s in request.Segments)
                    {
                        if (request.Operation == BlockOperation.Read)
                        {
                            Buffer.MemoryCopy(at, (void*)s.Address, s.Length, s.Length);
                        }
                        else
                        {
                            Buffer.MemoryCopy((void*)s.Address, at, s.Length, s.Length);
                        }

                        at += s.Length;
                    }

                    CompleteLater(request, (int)request.Length);
                    break;
                case BlockOperation.Discard:
                case BlockOperation.WriteZeroes:
                    NativeMemory.Clear(at, (nuint)request.Length);
                    CompleteLater(request, 0);
                    break;
                default:
                    CompleteLater(request, 0);
                    break;
            }
        }
    }
}
