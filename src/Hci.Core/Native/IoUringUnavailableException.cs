namespace Hci.Core.Native;

/// <summary>io_uring cannot be used on this machine; the message says why and what to do.</summary>
internal sealed class IoUringUnavailableException : Exception
{
    public IoUringUnavailableException(int errno, string reason)
        : base(reason)
    {
        Errno = errno;
    }

    public int Errno { get; }
}
