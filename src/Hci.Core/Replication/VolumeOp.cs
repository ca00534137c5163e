using System.Runtime.InteropServices;
using Hci.Core.Blocks;

namespace Hci.Core.Replication;

/// <summary>One volume request in flight on a <see cref="ReplicatedVolumeQueue"/>: its parts (one per extent it
/// touches), the replica requests still out, and what went wrong. Pooled per queue.</summary>
internal sealed unsafe class VolumeOp : IDisposable
{
    public const int MaxParts = 2;
    public const int MaxChecksums = ReplicaGeometry.MaxTransfer / ReplicaGeometry.BlockSize;

    public VolumeOp()
    {
        Checksums = (uint*)NativeMemory.Alloc(MaxChecksums, sizeof(uint));
    }

    public BlockRequest Outer = null!;
    public int Pending;
    public int PartCount;
    public readonly OpPart[] Parts = new OpPart[MaxParts];
    public readonly List<OpFailure> Failures = new(8);
    public bool Fenced;
    public bool Counted;

    // A flush's targets as it sent them: the volume's list is replaced when replica sets change, and an answer's
    // position (its tag) means a replica only in the list it was sent from.
    public ReplicaTarget[] FlushTargets = [];
    public long StartTicks;
    public uint* Checksums;
    public int Result;
    public BlockError Error;

    public void Reset(BlockRequest outer)
    {
        Outer = outer;
        Pending = 0;
        PartCount = 0;
        Failures.Clear();
        Fenced = false;
        Counted = false;
        FlushTargets = [];
        Result = 0;
        Error = BlockError.None;
        Array.Clear(Parts);
    }

    public void Dispose()
    {
        if (Checksums != null)
        {
            NativeMemory.Free(Checksums);
            Checksums = null;
        }
    }
}

/// <summary>The part of a volume request that falls in one extent.</summary>
internal struct OpPart
{
    public long Extent;
    public long Offset;
    public int Length;
    public int OuterOffset;
    public ulong Regions;
    public ExtentState State;
    public ExtentView? View;
    public int Tried;
    public int Bad;
    public bool Done;
    public bool Failed;
}

/// <summary>A replica that did not take its part of a write or flush.</summary>
internal readonly record struct OpFailure(int Part, int Replica, ReplicaStatus Status, string NodeId, int Device);
