using System.Runtime.InteropServices;
using System.Text;
using Hci.Core.Blocks;
using Hci.Core.Modules;
using Hci.Core.Native;
using Tmds.Linux;

namespace Hci.Core.Cluster;

/// <summary>
/// The lock file of a local cluster store, opened once per store and flock-ed for each operation: shared for a read,
/// exclusive for a commit. Several processes share one store this way; the kernel drops a lock when its process
/// ends (kill -9 included), so a stale lock file never blocks anyone.
/// </summary>
internal sealed unsafe class StoreLockFile : IDisposable
{
    private readonly FileDescriptorHandle _handle;
    private readonly string _path;

    private StoreLockFile(FileDescriptorHandle handle, string path)
    {
        _handle = handle;
        _path = path;
    }

    public static StoreLockFile Open(string path, string what)
    {
        int fd;
        var bytes = Encoding.UTF8.GetBytes(path + "\0");
        fixed (byte* p = bytes)
        {
            fd = LibC.open(p, LibC.O_RDWR | LibC.O_CREAT | LibC.O_CLOEXEC, (ushort)0x1A4 /* 0644 */);
        }

        if (fd < 0)
        {
            int errno = LibC.errno;
            throw new ClusterStoreException($"Cannot open the lock file '{path}' of {what}: {Errno.Describe(errno)}. Check that the directory exists and is writable by this user.");
        }

        return new StoreLockFile(new FileDescriptorHandle(fd), path);
    }

    /// <summary>Takes the lock (waiting for other processes' operations to end) until the result is disposed. The
    /// caller serializes the operations of this process: flock belongs to the open file, not to a thread.</summary>
    public Held Hold(bool exclusive)
    {
        int fd = (int)_handle.DangerousGetHandle();
        while (Interop.Flock(fd, exclusive ? Interop.LOCK_EX : Interop.LOCK_SH) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            if (errno != Errno.EINTR)
            {
                throw new ClusterStoreException($"Cannot lock '{_path}': {Errno.Describe(errno)}.");
            }
        }

        return new Held(fd);
    }

    public void Dispose() => _handle.Dispose();

    /// <summary>A lock held for one operation.</summary>
    public readonly struct Held(int fd) : IDisposable
    {
        public void Dispose() => Interop.Flock(fd, Interop.LOCK_UN);
    }
}
