namespace Hci.Testing;

/// <summary>
/// A disk as a guest sees it through one front-end: the geometry and features the front-end announced, and
/// requests answered with a <see cref="GuestStatus"/>. Each front-end has one of these over its real protocol
/// (virtio-blk over vhost-user, SCSI over iSCSI); the <see cref="FrontEndContract"/> drives them all alike.
/// </summary>
public abstract class GuestDisk : IAsyncDisposable
{
    /// <summary>Bytes in a logical block, as announced to the guest.</summary>
    public abstract int BlockSize { get; }

    /// <summary>Logical blocks, as announced to the guest.</summary>
    public abstract long BlockCount { get; }

    /// <summary>The most blocks one read or write may carry, as announced to the guest.</summary>
    public abstract int MaxTransferBlocks { get; }

    /// <summary>Whether the front-end tells the guest that the disk is read-only.</summary>
    public abstract bool ReadOnly { get; }

    /// <summary>Whether the front-end offers discard (virtio-blk DISCARD, SCSI UNMAP).</summary>
    public abstract bool OffersDiscard { get; }

    /// <summary>Whether the front-end offers write-zeroes (virtio-blk WRITE_ZEROES, SCSI WRITE SAME with a zero block).</summary>
    public abstract bool OffersWriteZeroes { get; }

    /// <summary>
    /// Whether a refusal names its cause (SCSI sense data does, as <see cref="GuestStatus.OutOfRange"/> or
    /// <see cref="GuestStatus.WriteProtected"/>); where it does not, every refusal reads <see cref="GuestStatus.Error"/>.
    /// </summary>
    public abstract bool NamesCauses { get; }

    /// <summary>Reads <paramref name="into"/>'s length in blocks from <paramref name="lba"/>.</summary>
    /// <param name="lba">The first block.</param>
    /// <param name="into">Where the data goes; a whole number of blocks.</param>
    /// <returns>The answer.</returns>
    public abstract Task<GuestStatus> ReadAsync(long lba, byte[] into);

    /// <summary>Writes <paramref name="data"/> from <paramref name="lba"/>.</summary>
    /// <param name="lba">The first block.</param>
    /// <param name="data">The data; a whole number of blocks.</param>
    /// <returns>The answer.</returns>
    public abstract Task<GuestStatus> WriteAsync(long lba, byte[] data);

    /// <summary>Asks that what was written be made durable.</summary>
    /// <returns>The answer.</returns>
    public abstract Task<GuestStatus> FlushAsync();

    /// <summary>Discards <paramref name="blocks"/> blocks from <paramref name="lba"/>.</summary>
    /// <param name="lba">The first block.</param>
    /// <param name="blocks">How many.</param>
    /// <returns>The answer.</returns>
    public abstract Task<GuestStatus> DiscardAsync(long lba, int blocks);

    /// <summary>Zeroes <paramref name="blocks"/> blocks from <paramref name="lba"/>.</summary>
    /// <param name="lba">The first block.</param>
    /// <param name="blocks">How many.</param>
    /// <returns>The answer.</returns>
    public abstract Task<GuestStatus> WriteZeroesAsync(long lba, int blocks);

    /// <inheritdoc/>
    public abstract ValueTask DisposeAsync();
}
