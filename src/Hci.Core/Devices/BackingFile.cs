using System.Runtime.Versioning;
using System.Text;
using Hci.Core.Blocks;
using Microsoft.Win32.SafeHandles;
using Tmds.Linux;

namespace Hci.Core.Devices;

/// <summary>A regular file or block device opened for a device: its handle, size and block size.</summary>
[SupportedOSPlatform("linux")]
internal sealed unsafe class BackingFile : IDisposable
{
    private const int BLKSSZGET = 0x1268;
    private const uint BLKGETSIZE64 = 0x80081272;

    private BackingFile(SafeFileHandle handle, string path, bool isBlockDevice, long size, int logicalBlockSize, bool direct, bool readOnly, int deviceQueueDepth)
    {
        DeviceQueueDepth = deviceQueueDepth;
        Handle = handle;
        Path = path;
        IsBlockDevice = isBlockDevice;
        Size = size;
        LogicalBlockSize = logicalBlockSize;
        Direct = direct;
        ReadOnly = readOnly;
    }

    public SafeFileHandle Handle { get; }

    public string Path { get; }

    public bool IsBlockDevice { get; }

    public long Size { get; }

    public int LogicalBlockSize { get; }

    public bool Direct { get; }

    public bool ReadOnly { get; }

    /// <summary>The block layer's tags (<c>nr_requests</c>) of the device under the I/O; 0 when unknown or not in the way (buffered files).</summary>
    public int DeviceQueueDepth { get; }

    /// <summary>Opens (and for regular files, creates or extends) the backing store.</summary>
    public static BackingFile Open(BlockDeviceOptions options)
    {
        string path = options.Path ?? throw new ArgumentException("A path is needed for a file-backed device.", nameof(options));
        bool readOnly = options.ReadOnly;
        int flags = (readOnly ? LibC.O_RDONLY : LibC.O_RDWR) | LibC.O_CLOEXEC;
        if (options.Direct)
        {
            flags |= LibC.O_DIRECT;
        }

        bool exists = File.Exists(path) || Directory.Exists(path);
        if (!exists && !readOnly)
        {
            if (options.Size is not > 0)
            {
                throw new FileNotFoundException($"'{path}' does not exist; give a size to create it.", path);
            }

            flags |= LibC.O_CREAT;
        }

        int fd;
        var bytes = Encoding.UTF8.GetBytes(path + "\0");
        fixed (byte* p = bytes)
        {
            fd = LibC.open(p, flags, (ushort)0x1B0 /* 0660 */);
        }

        if (fd < 0)
        {
            int errno = LibC.errno;
            string hint = errno == Errno.EINVAL && options.Direct ? " The file system may not support O_DIRECT (tmpfs does not): put the file elsewhere or turn direct I/O off." : string.Empty;
            throw new IOException($"Cannot open '{path}': {Errno.Describe(errno)}.{hint}", errno);
        }

        var handle = new SafeFileHandle((nint)fd, ownsHandle: true);
        try
        {
            stat st;
            if (LibC.fstat(fd, &st) != 0)
            {
                throw new IOException($"Cannot stat '{path}': {Errno.Describe(LibC.errno)}.");
            }

            bool isBlock = ((ushort)st.st_mode & LibC.S_IFMT) == LibC.S_IFBLK;
            long size;
            int lbs;
            if (isBlock)
            {
                ulong bytesSize;
                int sectorSize;
                if (LibC.ioctl(fd, unchecked((int)BLKGETSIZE64), &bytesSize) != 0 || LibC.ioctl(fd, BLKSSZGET, &sectorSize) != 0)
                {
                    throw new IOException($"Cannot read the size of block device '{path}': {Errno.Describe(LibC.errno)}.");
                }

                lbs = Math.Max(sectorSize, options.LogicalBlockSize ?? sectorSize);
                size = (long)bytesSize;
                if (options.Size is > 0 && options.Size < size)
                {
                    size = options.Size.Value;
                }
            }
            else
            {
                lbs = options.LogicalBlockSize ?? 4096;
                size = st.st_size;
                if (options.Size is > 0 && size < options.Size && !readOnly)
                {
                    if (LibC.ftruncate(fd, options.Size.Value) != 0)
                    {
                        int errno = LibC.errno;
                        throw new IOException($"Cannot extend '{path}' to {options.Size} bytes: {Errno.Describe(errno)}.", errno);
                    }

                    size = options.Size.Value;
                }
                else if (options.Size is > 0)
                {
                    size = Math.Min(size, options.Size.Value);
                }
            }

            size -= size % lbs;
            if (size <= 0)
            {
                throw new IOException($"'{path}' holds less than one {lbs}-byte block; give a size to create or extend it.");
            }

            // Direct I/O meets the block layer's tags: on a block device its own, on a file its file system's device.
            int queueDepth = isBlock ? ReadQueueDepth((ulong)st.st_rdev) : options.Direct ? ReadQueueDepth((ulong)st.st_dev) : 0;
            return new BackingFile(handle, path, isBlock, size, lbs, options.Direct, readOnly, queueDepth);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    public int Fd => (int)Handle.DangerousGetHandle();

    /// <summary>Reads <c>queue/nr_requests</c> of the block device <paramref name="dev"/> (a partition's is its disk's); 0 when there is none.</summary>
    internal static int ReadQueueDepth(ulong dev)
    {
        // Linux's dev_t: major in bits 8-19 and 32-43, minor in bits 0-7 and 12-31 and 44-63.
        ulong major = ((dev >> 8) & 0xfff) | ((dev >> 32) & ~0xfffUL);
        ulong minor = (dev & 0xff) | ((dev >> 12) & ~0xffUL);
        string dir = $"/sys/dev/block/{major}:{minor}";
        foreach (string candidate in new[] { $"{dir}/queue/nr_requests", $"{dir}/../queue/nr_requests" })
        {
            try
            {
                if (File.Exists(candidate) && int.TryParse(File.ReadAllText(candidate).Trim(), out int depth) && depth > 0)
                {
                    return depth;
                }
            }
            catch (IOException)
            {
                // Not readable here (a container without sysfs): unknown.
            }
            catch (UnauthorizedAccessException)
            {
                // Likewise.
            }
        }

        return 0;
    }

    public void Dispose() => Handle.Dispose();
}
