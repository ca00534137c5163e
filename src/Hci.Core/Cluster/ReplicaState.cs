namespace Hci.Core.Cluster;

/// <summary>Whether a replica of an extent holds every acknowledged write.</summary>
public enum ReplicaState
{
    /// <summary>Holds every acknowledged write: written on every write, may be read.</summary>
    InSync = 0,

    /// <summary>Missed writes: not written, never read, until resynced.</summary>
    OutOfSync = 1,

    /// <summary>Being copied back in sync: written on every write, never read until marked in sync.</summary>
    Resyncing = 2,
}
