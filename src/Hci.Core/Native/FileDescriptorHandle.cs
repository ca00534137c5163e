using System.Runtime.InteropServices;
using Tmds.Linux;

namespace Hci.Core.Native;

/// <summary>
/// An owned Linux file descriptor (ring, eventfd, socket, memfd), closed exactly once, when the handle is
/// disposed or finalized. Components that take descriptors from the kernel or from another process wrap them here
/// at once, so none leaks on an error path.
/// </summary>
public sealed class FileDescriptorHandle : SafeHandle
{
    /// <summary>Takes ownership of a descriptor.</summary>
    /// <param name="fd">The descriptor; a negative value makes an invalid handle that closes nothing.</param>
    public FileDescriptorHandle(int fd)
        : base((nint)(-1), ownsHandle: true)
    {
        SetHandle(fd);
    }

    /// <inheritdoc/>
    public override bool IsInvalid => handle < 0;

    /// <summary>The descriptor number, for system calls; valid while the handle is not disposed.</summary>
    public int Fd => (int)handle;

    /// <inheritdoc/>
    protected override bool ReleaseHandle() => LibC.close((int)handle) == 0;
}
