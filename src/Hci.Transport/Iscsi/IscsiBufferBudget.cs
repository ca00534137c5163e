namespace Hci.Transport.Iscsi;

/// <summary>A budget of data buffer bytes shared by several task pools (the target's, over all its connections).</summary>
internal interface IIscsiBufferBudget
{
    /// <summary>Counts <paramref name="bytes"/> against the budget; false when it would be exceeded.</summary>
    /// <param name="bytes">Bytes.</param>
    /// <returns>True when reserved.</returns>
    bool TryReserveBuffers(long bytes);

    /// <summary>Gives bytes back.</summary>
    /// <param name="bytes">Bytes.</param>
    void ReleaseBuffers(long bytes);
}
