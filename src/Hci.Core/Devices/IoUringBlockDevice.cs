using System.Runtime.Versioning;
using Hci.Core.Blocks;
using Hci.Core.Native;

namespace Hci.Core.Devices;

/// <summary>
/// A file or block device driven through Linux io_uring: one ring per queue, batched submission, the file
/// registered with every ring, buffers registered on request, completions reaped on the queue's own thread.
/// </summary>
/// <remarks>Open it with <see cref="BlockDevices.Open"/>; it refuses to start, with the reason and the fix, where the
/// kernel's io_uring is missing or disabled.</remarks>
[SupportedOSPlatform("linux")]
internal sealed class IoUringBlockDevice : BlockDevice
{
    private readonly BackingFile _file;

    internal IoUringBlockDevice(BackingFile file, int maxTransferBytes)
        : base(file.Path, CreateGeometry(file, maxTransferBytes), CreateCapabilities(file))
    {
        _file = file;
        Support = IoUringSupport.Current;
    }

    /// <inheritdoc/>
    public override string Engine => "io_uring";

    /// <summary>True when the backing is a block device rather than a regular file.</summary>
    public bool IsBlockDevice => _file.IsBlockDevice;

    internal BackingFile File => _file;

    internal IoUringSupport Support { get; }

    /// <inheritdoc/>
    protected override BlockQueue CreateQueueCore(int depth) => new IoUringBlockQueue(this, depth);

    /// <inheritdoc/>
    protected override void DisposeCore() => _file.Dispose();

    private static BlockGeometry CreateGeometry(BackingFile file, int maxTransferBytes)
        => new(file.LogicalBlockSize, file.Size, Math.Max(file.LogicalBlockSize, maxTransferBytes - (maxTransferBytes % file.LogicalBlockSize)),
               maxSegments: 256, bufferAlignment: file.Direct ? Math.Min(file.LogicalBlockSize, 4096) : 1, queueCount: Environment.ProcessorCount)
        {
            DeviceQueueDepth = file.DeviceQueueDepth,
        };

    private static BlockDeviceCapabilities CreateCapabilities(BackingFile file)
    {
        var caps = BlockDeviceCapabilities.Flush | BlockDeviceCapabilities.ForceUnitAccess | BlockDeviceCapabilities.PersistentData;
        if (file.ReadOnly)
        {
            return caps | BlockDeviceCapabilities.ReadOnly;
        }

        if (IoUringSupport.Current.Supports(Interop.IORING_OP_FALLOCATE))
        {
            // fallocate(PUNCH_HOLE) and fallocate(ZERO_RANGE) serve files and block devices alike; a hole reads as zeroes.
            caps |= BlockDeviceCapabilities.Discard | BlockDeviceCapabilities.DiscardZeroesData | BlockDeviceCapabilities.WriteZeroes;
        }

        return caps;
    }
}
