namespace Hci.Core.Blocks;

/// <summary>A block request failed: refused before the device, or failed by it.</summary>
/// <remarks>Raised only at API edges such as <see cref="BlockDevice.ReadAsync"/>; the data path reports
/// <see cref="BlockRequest.Error"/> and <see cref="BlockRequest.Errno"/> instead.</remarks>
public sealed class BlockDeviceException : IOException
{
    /// <summary>Creates the exception for a failed request.</summary>
    /// <param name="deviceName">The device's name.</param>
    /// <param name="operation">The failed operation.</param>
    /// <param name="offset">Its byte offset.</param>
    /// <param name="length">Its byte length.</param>
    /// <param name="error">Why it failed.</param>
    /// <param name="errno">The errno (positive).</param>
    public BlockDeviceException(string deviceName, BlockOperation operation, long offset, long length, BlockError error, int errno)
        : base(BuildMessage(deviceName, operation, offset, length, error, errno))
    {
        DeviceName = deviceName;
        Operation = operation;
        Offset = offset;
        Length = length;
        Error = error;
        Errno = errno;
        HResult = errno;
    }

    /// <summary>The device's name.</summary>
    public string DeviceName { get; }

    /// <summary>The failed operation.</summary>
    public BlockOperation Operation { get; }

    /// <summary>The byte offset of the failed request.</summary>
    public long Offset { get; }

    /// <summary>The byte length of the failed request.</summary>
    public long Length { get; }

    /// <summary>Why it failed.</summary>
    public BlockError Error { get; }

    /// <summary>The errno value (positive), such as 5 for EIO.</summary>
    public int Errno { get; }

    private static string BuildMessage(string deviceName, BlockOperation operation, long offset, long length, BlockError error, int errno)
    {
        string what = error switch
        {
            BlockError.Misaligned => "refused: the offset, length or a buffer is not aligned as the device requires",
            BlockError.OutOfRange => "refused: the range is empty or lies outside the device",
            BlockError.TooLarge => "refused: longer than the device's maximum transfer",
            BlockError.BadSegments => "refused: too many buffer segments, or segments that do not add up to the length",
            BlockError.Unsupported => "refused: the device does not support this operation or flag",
            BlockError.ReadOnly => "refused: the device is read-only",
            BlockError.Canceled => "canceled: the queue was closed",
            _ => "failed on the device",
        };
        return $"{operation} of {length} bytes at offset {offset} on '{deviceName}' {what}: {Blocks.Errno.Describe(errno)}.";
    }
}
