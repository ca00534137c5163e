namespace Hci.Core.Blocks;

/// <summary>What a <see cref="BlockRequest"/> asks the device to do.</summary>
public enum BlockOperation : byte
{
    /// <summary>Read the request's range into its buffers.</summary>
    Read = 0,

    /// <summary>Write the request's buffers to its range.</summary>
    Write = 1,

    /// <summary>Make every write completed so far durable. Carries no range.</summary>
    Flush = 2,

    /// <summary>Tell the device that a range is no longer needed. What it reads back afterwards is
    /// zeroes where <see cref="BlockDeviceCapabilities.DiscardZeroesData"/> is set, unspecified otherwise.</summary>
    Discard = 3,

    /// <summary>Make a range read back as zeroes, without data buffers.</summary>
    WriteZeroes = 4,
}
