namespace Hci.Core.Devices;

/// <summary>How to open a device with <see cref="BlockDevices.Open"/>.</summary>
public sealed class BlockDeviceOptions
{
    /// <summary>The engine. <remarks>Default: <see cref="BlockEngine.Auto"/>.</remarks></summary>
    public BlockEngine Engine { get; set; } = BlockEngine.Auto;

    /// <summary>Regular file or block device, for the io_uring and file engines. <remarks>Default: none.</remarks></summary>
    public string? Path { get; set; }

    /// <summary>
    /// Capacity in bytes. For a file: created or extended to this size; for a block device: a limit below its
    /// size; required for memory and null devices. <remarks>Default: the file's or device's size.</remarks>
    /// </summary>
    public long? Size { get; set; }

    /// <summary>Bypass the page cache (O_DIRECT). <remarks>Default: true.</remarks></summary>
    public bool Direct { get; set; } = true;

    /// <summary>Refuse writes. <remarks>Default: false.</remarks></summary>
    public bool ReadOnly { get; set; }

    /// <summary>
    /// Logical block size in bytes, a power of two from 512 to 65536.
    /// <remarks>Default: the block device's sector size, or 4096 for files, memory and null devices.</remarks>
    /// </summary>
    public int? LogicalBlockSize { get; set; }

    /// <summary>Largest read or write in bytes. <remarks>Default: 1 MiB.</remarks></summary>
    public int MaxTransferBytes { get; set; } = 1 << 20;

    /// <summary>Checks the options and says what to fix.</summary>
    /// <exception cref="ArgumentException">The options are inconsistent; the message says which and how to fix them.</exception>
    public void Validate()
    {
        if (!Enum.IsDefined(Engine))
        {
            throw new ArgumentException($"Unknown engine {Engine}: use io_uring, file, memory, null or auto.");
        }

        if (Engine is BlockEngine.Memory or BlockEngine.Null)
        {
            if (Size is not > 0)
            {
                throw new ArgumentException($"The {Engine.ToString().ToLowerInvariant()} engine needs a positive Size in bytes.");
            }
        }
        else if (string.IsNullOrWhiteSpace(Path))
        {
            throw new ArgumentException("The io_uring and file engines need a Path: a regular file or a block device.");
        }

        if (Size is <= 0)
        {
            throw new ArgumentException($"Size must be positive (was {Size}).");
        }

        if (LogicalBlockSize is { } lbs && (lbs < 512 || lbs > 65536 || !int.IsPow2(lbs)))
        {
            throw new ArgumentException($"LogicalBlockSize must be a power of two from 512 to 65536 (was {lbs}).");
        }

        int block = LogicalBlockSize ?? 512;
        if (MaxTransferBytes < block || MaxTransferBytes % block != 0)
        {
            throw new ArgumentException($"MaxTransferBytes must be a positive multiple of the logical block size (was {MaxTransferBytes}).");
        }

        if (Size is { } size && size % (LogicalBlockSize ?? 512) != 0)
        {
            throw new ArgumentException($"Size must be a multiple of the logical block size (was {size}).");
        }
    }
}
