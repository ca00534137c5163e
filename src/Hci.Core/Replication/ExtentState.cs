using Hci.Core.Cluster;

namespace Hci.Core.Replication;

/// <summary>
/// The owner's view of one extent, shared by every queue of the volume: the published replica set (replaced, never
/// changed in place), the writes in flight, the regions written since they were last marked clean, and per replica
/// the regions it missed. Queues touch it with interlocked operations only.
/// </summary>
internal sealed class ExtentState(int maxReplicas)
{
    /// <summary>The replica set; null while the extent is not allocated (it reads as zeros).</summary>
    public volatile ExtentView? View;

    /// <summary>Writes submitted and not answered yet. Incremented before <see cref="View"/> is read, so a
    /// control-plane change that sees 0 after publishing a new view knows every later write uses it.</summary>
    public int InFlight;

    /// <summary>Writes ever started: a copy made while this did not move saw no concurrent write.</summary>
    public long Started;

    /// <summary>Non-zero while the owner marks regions clean on the replicas: new writes wait meanwhile.</summary>
    public volatile int Cleaning;

    /// <summary>Regions whose writes are held (a region copy of a resync or a replica move): new writes that touch
    /// them wait, writes to the extent's other regions go on.</summary>
    public ulong HeldRegions;

    /// <summary>Per region, writes in flight that touch it (with <see cref="InFlight"/>, counted before
    /// <see cref="HeldRegions"/> is read, so a region copy that sees 0 after raising its bit knows every later
    /// write to the region waits).</summary>
    public readonly int[] RegionInFlight = new int[ReplicaGeometry.RegionsPerExtent];

    /// <summary>Regions written since they were last marked clean.</summary>
    public ulong Written;

    /// <summary>Per replica index, the regions it missed (it was out of sync, or its write failed).</summary>
    public readonly ulong[] Missed = new ulong[maxReplicas];

    /// <summary>The allocation in progress, if any (control plane).</summary>
    public Task? Allocating;

    /// <summary>Per replica index, the state change in progress, if any (control plane).</summary>
    public readonly Task<bool>?[] Marking = new Task<bool>?[maxReplicas];

    /// <summary>Held by the control plane while it holds the extent's writes (one holder at a time).</summary>
    public readonly SemaphoreSlim Gate = new(1, 1);

    /// <summary>Non-zero while a replica move (rebuild, rebalance) works on the extent: the background resync leaves
    /// the extent to it.</summary>
    public int Moving;

    /// <summary>The value of <see cref="Started"/> at the cleaner's last look.</summary>
    public long CleanerSeen = -1;

    /// <summary>The cleaner's pass that last saw <see cref="Started"/> move (the least recently written extents
    /// leave the activity log first).</summary>
    public long LastActivePass;
}

/// <summary>An extent's replica set as the data path sees it: immutable, replaced as a whole.</summary>
internal sealed class ExtentView
{
    public ExtentView(IReadOnlyList<ReplicaTarget> replicas, string localNodeId)
    {
        Replicas = [.. replicas];
        ReadFirst = -1;
        for (int i = 0; i < Replicas.Length; i++)
        {
            if (Replicas[i].State == ReplicaState.InSync)
            {
                InSync++;
                if (ReadFirst < 0 || (Replicas[i].NodeId == localNodeId && Replicas[ReadFirst].NodeId != localNodeId))
                {
                    ReadFirst = i;
                }
            }
        }
    }

    /// <summary>The replicas.</summary>
    public ReplicaTarget[] Replicas { get; }

    /// <summary>How many are in sync.</summary>
    public int InSync { get; }

    /// <summary>The replica reads go to first: the local in-sync one, else the first in-sync one; -1 when none.</summary>
    public int ReadFirst { get; }

    public ExtentView With(int replica, ReplicaState state, string localNodeId)
    {
        var copy = (ReplicaTarget[])Replicas.Clone();
        copy[replica] = copy[replica] with { State = state };
        return new ExtentView(copy, localNodeId);
    }
}
