namespace Hci.Core.Blocks;

/// <summary>Why a request failed: a refusal before the device (bad input) or the device's own error.</summary>
public enum BlockError : byte
{
    /// <summary>The request succeeded.</summary>
    None = 0,

    /// <summary>The offset, the length, a buffer address or a segment length is not aligned as the geometry requires (EINVAL).</summary>
    Misaligned,

    /// <summary>The range does not lie inside the device, or its length is zero (EINVAL / ERANGE).</summary>
    OutOfRange,

    /// <summary>The request is longer than the device's maximum transfer (EINVAL).</summary>
    TooLarge,

    /// <summary>The request has more buffer segments than the device accepts, or its buffers do not add up to its length (EINVAL).</summary>
    BadSegments,

    /// <summary>The device does not support the operation or flag (EOPNOTSUPP).</summary>
    Unsupported,

    /// <summary>The device is read-only (EROFS).</summary>
    ReadOnly,

    /// <summary>The queue was closed before the request could be carried out (ECANCELED).</summary>
    Canceled,

    /// <summary>The device reported an error; <see cref="BlockRequest.Errno"/> says which.</summary>
    Device,
}
