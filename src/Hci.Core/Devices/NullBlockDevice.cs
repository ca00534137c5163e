using Hci.Core.Blocks;
using Hci.Core.Modules;

namespace Hci.Core.Devices;

/// <summary>
/// A device that completes every request at once and stores nothing, like Linux null_blk: it measures the
/// cost of the stack above it. Reads leave their buffers untouched.
/// </summary>
public sealed class NullBlockDevice : BlockDevice
{
    /// <summary>Creates the device.</summary>
    /// <param name="capacity">Bytes it claims to hold: a positive multiple of <paramref name="logicalBlockSize"/>.</param>
    /// <param name="logicalBlockSize">512 to 65536, a power of two; 4096 by default.</param>
    /// <param name="maxTransferBytes">Largest read or write; 1 MiB by default.</param>
    public NullBlockDevice(long capacity, int logicalBlockSize = 4096, int maxTransferBytes = 1 << 20)
        : base("null", new BlockGeometry(logicalBlockSize, capacity, maxTransferBytes, maxSegments: 256, bufferAlignment: 1, queueCount: Environment.ProcessorCount),
               BlockDeviceCapabilities.Flush | BlockDeviceCapabilities.ForceUnitAccess | BlockDeviceCapabilities.Discard | BlockDeviceCapabilities.WriteZeroes)
    {
    }

    /// <inheritdoc/>
    public override string Engine => "null";

    /// <inheritdoc/>
    protected override BlockQueue CreateQueueCore(int depth) => new Queue(this);

    /// <inheritdoc/>
    protected override void DisposeCore()
    {
    }

    private sealed class Queue : SynchronousBlockQueue
    {
        public Queue(NullBlockDevice device)
            : base(device)
        {
        }

        protected override void SubmitCore(BlockRequest request)
            => CompleteLater(request, request.Operation is BlockOperation.Read or BlockOperation.Write ? (int)request.Length : 0);
    }
}
