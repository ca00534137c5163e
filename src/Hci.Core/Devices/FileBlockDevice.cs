using Hci.Core.Blocks;

namespace Hci.Core.Devices;

/// <summary>
/// A file or block device driven through portable positional I/O (<see cref="RandomAccess"/>): the fallback
/// where io_uring is unavailable. Each queue runs its requests on a few worker threads of its own.
/// </summary>
internal sealed class FileBlockDevice : BlockDevice
{
    private readonly BackingFile _file;

    internal FileBlockDevice(BackingFile file, int maxTransferBytes)
        : base(file.Path, new BlockGeometry(file.LogicalBlockSize, file.Size, Math.Max(file.LogicalBlockSize, maxTransferBytes - (maxTransferBytes % file.LogicalBlockSize)),
                   maxSegments: 256, bufferAlignment: file.Direct ? Math.Min(file.LogicalBlockSize, 4096) : 1, queueCount: Environment.ProcessorCount),
               BlockDeviceCapabilities.Flush | BlockDeviceCapabilities.PersistentData | BlockDeviceCapabilities.WriteZeroes
               | (file.ReadOnly ? BlockDeviceCapabilities.ReadOnly : BlockDeviceCapabilities.None))
    {
        _file = file;
    }

    /// <inheritdoc/>
    public override string Engine => "file";

    internal BackingFile File => _file;

    /// <inheritdoc/>
    protected override BlockQueue CreateQueueCore(int depth) => new FileBlockQueue(this, Math.Clamp(depth, 1, 8));

    /// <inheritdoc/>
    protected override void DisposeCore() => _file.Dispose();
}
