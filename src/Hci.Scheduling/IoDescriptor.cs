using Hci.Core.Blocks;

namespace Hci.Scheduling;

/// <summary>What a scheduler knows of one I/O: who issued it, what it does, and when it arrived.</summary>
/// <param name="Class">VM, container or background.</param>
/// <param name="Tenant">The tenant: a volume, a guest or a session.</param>
/// <param name="Operation">The block operation.</param>
/// <param name="Offset">Byte offset.</param>
/// <param name="Length">Byte length (0 for flush).</param>
/// <param name="EnqueuedNs">When the scheduler received it, in the scheduler clock's nanoseconds.</param>
public readonly record struct IoDescriptor(IoClass Class, int Tenant, BlockOperation Operation, long Offset, long Length, long EnqueuedNs);
