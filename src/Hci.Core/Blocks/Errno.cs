namespace Hci.Core.Blocks;

/// <summary>Linux errno values used on the data path (x86-64 and arm64 share them).</summary>
public static class Errno
{
    /// <summary>Operation not permitted.</summary>
    public const int EPERM = 1;
    /// <summary>Interrupted system call.</summary>
    public const int EINTR = 4;
    /// <summary>Input/output error.</summary>
    public const int EIO = 5;
    /// <summary>Try again.</summary>
    public const int EAGAIN = 11;
    /// <summary>Out of memory.</summary>
    public const int ENOMEM = 12;
    /// <summary>Device or resource busy.</summary>
    public const int EBUSY = 16;
    /// <summary>Invalid argument.</summary>
    public const int EINVAL = 22;
    /// <summary>No space left on device.</summary>
    public const int ENOSPC = 28;
    /// <summary>Read-only file system.</summary>
    public const int EROFS = 30;
    /// <summary>Result out of range.</summary>
    public const int ERANGE = 34;
    /// <summary>Function not implemented.</summary>
    public const int ENOSYS = 38;
    /// <summary>Timer expired.</summary>
    public const int ETIME = 62;
    /// <summary>Operation not supported.</summary>
    public const int EOPNOTSUPP = 95;
    /// <summary>Operation canceled.</summary>
    public const int ECANCELED = 125;

    /// <summary>A short English name and description of an errno value.</summary>
    /// <param name="errno">Positive errno.</param>
    /// <returns>For example "EIO (input/output error)".</returns>
    public static string Describe(int errno) => errno switch
    {
        EPERM => "EPERM (operation not permitted)",
        EINTR => "EINTR (interrupted)",
        EIO => "EIO (input/output error)",
        EAGAIN => "EAGAIN (try again)",
        ENOMEM => "ENOMEM (out of memory)",
        EBUSY => "EBUSY (device busy)",
        EINVAL => "EINVAL (invalid argument)",
        ENOSPC => "ENOSPC (no space left on device)",
        EROFS => "EROFS (read-only)",
        ERANGE => "ERANGE (out of range)",
        ENOSYS => "ENOSYS (not implemented)",
        ETIME => "ETIME (timer expired)",
        EOPNOTSUPP => "EOPNOTSUPP (operation not supported)",
        ECANCELED => "ECANCELED (canceled)",
        _ => $"errno {errno}",
    };
}
