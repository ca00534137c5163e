using System.Runtime.InteropServices;
using Tmds.Linux;

namespace Hci.Core.Modules;

/// <summary>An owned Linux file descriptor (ring, eventfd, epoll set, socket, memfd), closed exactly once.</summary>
internal sealed class FileDescriptorHandle : SafeHandle
{
    /// <summary>Takes ownership of <paramref name="fd"/> (a negative value makes an invalid handle).</summary>
    /// <param name="fd">The descriptor.</param>
    public FileDescriptorHandle(int fd)
        : base((nint)(-1), ownsHandle: true)
    {
        SetHandle(fd);
    }

    /// <inheritdoc/>
    public override bool IsInvalid => handle < 0;

    /// <summary>The descriptor's number (valid while the handle is open; use DangerousAddRef across a call that must not race a close).</summary>
    public int Fd => (int)handle;

    /// <inheritdoc/>
    protected override bool ReleaseHandle() => LibC.close((int)handle) == 0;
}
