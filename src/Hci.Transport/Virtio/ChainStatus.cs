namespace Hci.Transport.Virtio;

/// <summary>The outcome of walking a descriptor chain; anything but <see cref="Ok"/> fails that request only.</summary>
internal enum ChainStatus
{
    /// <summary>The chain is well formed and every buffer lies in guest memory.</summary>
    Ok = 0,

    /// <summary>A descriptor index is past the table.</summary>
    BadIndex,

    /// <summary>A buffer is not wholly inside one memory region.</summary>
    OutOfBounds,

    /// <summary>The chain is longer than its table, so it loops.</summary>
    Loop,

    /// <summary>An indirect table is empty, misaligned, too long, nested, or chained with NEXT.</summary>
    BadIndirect,

    /// <summary>A device-readable buffer follows a device-writable one.</summary>
    BadOrder,

    /// <summary>More buffers than the caller can take.</summary>
    TooManySegments,
}
