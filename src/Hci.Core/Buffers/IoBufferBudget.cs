namespace Hci.Core.Buffers;

/// <summary>
/// Bytes of I/O buffers that several pools may hold together (an iSCSI target's limit across all its connections),
/// so that many clients cannot together make the node allocate without bound. Thread-safe.
/// </summary>
public sealed class IoBufferBudget
{
    private long _reserved;

    /// <summary>Makes a budget of <paramref name="limit"/> bytes.</summary>
    /// <param name="limit">Bytes; positive.</param>
    public IoBufferBudget(long limit)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(limit);
        Limit = limit;
    }

    /// <summary>The limit in bytes.</summary>
    public long Limit { get; }

    /// <summary>Bytes reserved now.</summary>
    public long Reserved => Volatile.Read(ref _reserved);

    /// <summary>Reserves <paramref name="bytes"/> when they fit.</summary>
    /// <param name="bytes">Bytes; not negative.</param>
    /// <returns>False, reserving nothing, when they do not fit.</returns>
    public bool TryReserve(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        while (true)
        {
            long now = Volatile.Read(ref _reserved);
            long next = checked(now + bytes);
            if (next > Limit)
            {
                return false;
            }

            if (Interlocked.CompareExchange(ref _reserved, next, now) == now)
            {
                return true;
            }
        }
    }

    /// <summary>Gives back bytes from <see cref="TryReserve"/>.</summary>
    /// <param name="bytes">Bytes; not negative.</param>
    public void Release(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        long left = Interlocked.Add(ref _reserved, -bytes);
        if (left < 0)
        {
            throw new InvalidOperationException("More bytes were given back to the budget than were reserved.");
        }
    }
}
