namespace Hci.Core.Blocks;

/// <summary>What a device supports besides read and write; check before submitting the matching operation.</summary>
[Flags]
public enum BlockDeviceCapabilities
{
    /// <summary>Read and write only.</summary>
    None = 0,

    /// <summary><see cref="BlockOperation.Flush"/> is accepted.</summary>
    Flush = 1 << 0,

    /// <summary><see cref="BlockRequestFlags.ForceUnitAccess"/> is honoured on writes.</summary>
    ForceUnitAccess = 1 << 1,

    /// <summary><see cref="BlockOperation.Discard"/> is accepted.</summary>
    Discard = 1 << 2,

    /// <summary>A discarded range reads back as zeroes.</summary>
    DiscardZeroesData = 1 << 3,

    /// <summary><see cref="BlockOperation.WriteZeroes"/> is accepted.</summary>
    WriteZeroes = 1 << 4,

    /// <summary>Reads return what was written (false for the null device, whose reads return no data).</summary>
    PersistentData = 1 << 5,

    /// <summary>The device refuses writes, discards and write-zeroes.</summary>
    ReadOnly = 1 << 6,
}
