using System.Runtime.InteropServices;
using Hci.Core.Blocks;
using Hci.Core.Modules;

namespace Hci.Core.Devices;

/// <summary>A device in process memory: fast, volatile, and exact (discard and write-zeroes read back as zeroes).</summary>
/// <remarks>Memory is committed by the OS as it is first written. Queues on different threads may use it at once;
/// overlapping writes from different threads race as they would on a disk.</remarks>
public sealed unsafe class MemoryBlockDevice : BlockDevice
{
    private byte* _memory;

    /// <summary>Creates a zero-filled device.</summary>
    /// <param name="capacity">Bytes: a positive multiple of <paramref name="logicalBlockSize"/>.</param>
    /// <param name="logicalBlockSize">512 to 65536, a power of two; 4096 by default.</param>
    /// <param name="maxTransferBytes">Largest read or write; 1 MiB by default.</param>
    public MemoryBlockDevice(long capacity, int logicalBlockSize = 4096, int maxTransferBytes = 1 << 20)
        : base("memory", new BlockGeometry(logicalBlockSize, capacity, maxTransferBytes, maxSegments: 256, bufferAlignment: 1, queueCount: Environment.ProcessorCount),
               BlockDeviceCapabilities.Flush | BlockDeviceCapabilities.ForceUnitAccess | BlockDeviceCapabilities.Discard | BlockDeviceCapabilities.DiscardZeroesData
               | BlockDeviceCapabilities.WriteZeroes | BlockDeviceCapabilities.PersistentData)
    {
        _memory = (byte*)NativeMemory.AllocZeroed((nuint)capacity);
    }

    /// <inheritdoc/>
    public override string Engine => "memory";

    /// <inheritdoc/>
    protected override BlockQueue CreateQueueCore(int depth) => new Queue(this);

    /// <inheritdoc/>
    protected override void DisposeCore()
    {
        var memory = _memory;
        _memory = null;
        if (memory != null)
        {
            NativeMemory.Free(memory);
        }
    }

    private sealed class Queue : SynchronousBlockQueue
    {
        private readonly MemoryBlockDevice _device;

        public Queue(MemoryBlockDevice device)
            : base(device)
        {
            _device = device;
        }

        protected override void SubmitCore(BlockRequest request)
        {
            byte* memory = _device._memory;
            if (memory == null)
            {
                CompleteLater(request, -Errno.ECANCELED, BlockError.Canceled);
                return;
            }

            byte* at = memory + request.Offset;
            switch (request.Operation)
            {
                case BlockOperation.Read:
                    foreach (var s in request.Segments)
                    {
                        Buffer.MemoryCopy(at, (void*)s.Address, s.Length, s.Length);
                        at += s.Length;
                    }

                    CompleteLater(request, (int)request.Length);
                    break;
                case BlockOperation.Write:
                    foreach (var s in request.Segments)
                    {
                        Buffer.MemoryCopy((void*)s.Address, at, s.Length, s.Length);
                        at += s.Length;
                    }

                    CompleteLater(request, (int)request.Length);
                    break;
                case BlockOperation.Discard:
                case BlockOperation.WriteZeroes:
                    NativeMemory.Clear(at, (nuint)request.Length);
                    CompleteLater(request, 0);
                    break;
                default:
                    CompleteLater(request, 0);
                    break;
            }
        }
    }
}
