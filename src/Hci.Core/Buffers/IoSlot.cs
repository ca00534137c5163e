using Hci.Core.Blocks;

namespace Hci.Core.Buffers;

/// <summary>
/// One I/O's reusable state in a front-end: its <see cref="BlockRequest"/>, an aligned buffer grown on demand, and
/// whatever the front-end keeps per command (derive from this class: an iSCSI task's tags and R2T state, a bench
/// job's offsets). Taken from and given back to an <see cref="IoSlotPool{TSlot}"/>, never allocated per I/O.
/// </summary>
public abstract class IoSlot
{
    /// <summary>The request the slot submits; its handler, range and segments are the owner's to set.</summary>
    public BlockRequest Request { get; } = new();

    /// <summary>The slot's buffer, or null until a command needed one (and after the pool reclaimed an idle one).</summary>
    public AlignedBuffer? Buffer { get; internal set; }

    /// <summary>Bytes in <see cref="Buffer"/> (0 without one).</summary>
    public int Capacity => Buffer?.Length ?? 0;

    /// <summary>True while taken from its pool.</summary>
    public bool InUse { get; internal set; }

    /// <summary>Called when the slot goes back to its pool: clear per-command state here.</summary>
    protected virtual void Reset()
    {
    }

    internal void ResetForPool() => Reset();
}
