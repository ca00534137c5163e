namespace Hci.Scheduling;

/// <summary>
/// An I/O scheduling policy: it takes I/Os as they arrive and says which to dispatch, and when. It owns no
/// thread and no clock: the caller (a live dispatcher or the simulator) passes the time in nanoseconds and
/// bounds how many I/Os are at the device.
/// </summary>
/// <typeparam name="T">The caller's handle for an I/O, such as a <c>BlockRequest</c>.</typeparam>
/// <remarks>Not thread-safe: one dispatcher thread drives it. Steady-state calls allocate nothing.</remarks>
public abstract class IoScheduler<T>
    where T : class
{
    /// <summary>A short name, such as "fifo" or "hybrid".</summary>
    public abstract string Name { get; }

    /// <summary>I/Os waiting in the scheduler.</summary>
    public abstract int Count { get; }

    /// <summary>Takes an arriving I/O.</summary>
    /// <param name="item">The caller's handle.</param>
    /// <param name="io">What the I/O is; <see cref="IoDescriptor.EnqueuedNs"/> is the arrival time.</param>
    public abstract void Enqueue(T item, in IoDescriptor io);

    /// <summary>Gives the next I/O to dispatch at <paramref name="nowNs"/>, if one may go now.</summary>
    /// <param name="nowNs">The current time.</param>
    /// <param name="item">The I/O's handle.</param>
    /// <param name="io">Its descriptor.</param>
    /// <returns>False when nothing waits or nothing may go yet (see <see cref="NextEligibleNs"/>).</returns>
    public abstract bool TryDequeue(long nowNs, out T item, out IoDescriptor io);

    /// <summary>The earliest time at which a waiting I/O may go, when none may go now; <see cref="long.MaxValue"/> when nothing waits.</summary>
    /// <param name="nowNs">The current time.</param>
    /// <returns>A time in nanoseconds.</returns>
    public abstract long NextEligibleNs(long nowNs);

    /// <summary>Tells the scheduler that a dispatched I/O completed.</summary>
    /// <param name="io">Its descriptor.</param>
    /// <param name="nowNs">The completion time.</param>
    public virtual void OnCompleted(in IoDescriptor io, long nowNs)
    {
    }

    /// <summary>
    /// True when <paramref name="tenant"/>'s I/O is being held back now: a front-end may leave that tenant's new
    /// requests where they are (in the guest's ring) and keep notifications off until this turns false.
    /// </summary>
    /// <param name="tenant">The tenant.</param>
    /// <param name="nowNs">The current time.</param>
    /// <returns>Whether the tenant is throttled.</returns>
    public abstract bool IsThrottled(int tenant, long nowNs);
}
