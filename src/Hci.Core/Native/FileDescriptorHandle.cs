using System.Runtime.InteropServices;
using Tmds.Linux;

namespace Hci.Core.Native;

/// <summary>An owned Linux file descriptor (ring, eventfd), closed exactly once.</summary>
internal sealed class FileDescriptorHandle : SafeHandle
{
    public FileDescriptorHandle(int fd)
        : base((nint)(-1), ownsHandle: true)
    {
        SetHandle(fd);
    }

    public override bool IsInvalid => handle < 0;

    public int Fd => (int)handle;

    protected override bool ReleaseHandle() => LibC.close((int)handle) == 0;
}
