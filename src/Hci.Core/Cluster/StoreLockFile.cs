using System.Runtime.InteropServices;
using System.Globalization;
using System.Text;
using Hci.Core.Blocks;
using Hci.Core.Modules;
using Hci.Core.Native;
using Tmds.Linux;

namespace Hci.Core.Cluster;

/// <summary>
/// An exclusive flock on a file, holding the owner's pid: one process at a time may open a local cluster store. The
/// kernel drops the lock when the process ends (kill -9 included), so a stale lock file never blocks anyone.
/// </summary>
internal sealed unsafe class StoreLockFile : IDisposable
{
    private readonly FileDescriptorHandle _handle;

    private StoreLockFile(FileDescriptorHandle handle) => _handle = handle;

    public static StoreLockFile Acquire(string path, string what)
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

        var handle = new FileDescriptorHandle(fd);
        try
        {
            if (Interop.Flock(fd, Interop.LOCK_EX | Interop.LOCK_NB) != 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                if (errno == LibC.EWOULDBLOCK)
                {
                    string holder = ReadHolder(fd);
                    throw new ClusterStoreException($"{what} is in use by {holder}: only one process may open a local cluster store at a time. Stop that process (a host that uses --data-dir holds its store while it runs), or point this one at another directory.");
                }

                throw new ClusterStoreException($"Cannot lock '{path}': {Errno.Describe(errno)}.");
            }

            byte[] pid = Encoding.ASCII.GetBytes(Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + "\n");
            fixed (byte* p = pid)
            {
                if (LibC.ftruncate(fd, 0) != 0 || LibC.pwrite(fd, p, pid.Length, 0) != pid.Length)
                {
                    throw new ClusterStoreException($"Cannot write the lock file '{path}': {Errno.Describe(LibC.errno)}.");
                }
            }

            return new StoreLockFile(handle);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    public void Dispose() => _handle.Dispose();

    private static string ReadHolder(int fd)
    {
        byte* buffer = stackalloc byte[32];
        long read = LibC.pread(fd, buffer, 32, 0);
        string text = read > 0 ? Encoding.ASCII.GetString(buffer, (int)read).Trim() : string.Empty;
        if (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int pid))
        {
            return "another process";
        }

        string name = string.Empty;
        try
        {
            name = File.ReadAllText($"/proc/{pid}/comm").Trim();
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }

        return name.Length > 0 ? $"process {pid} ({name})" : $"process {pid}";
    }
}
