namespace Hci.Scheduling;

/// <summary>First in, first out: dispatches every I/O as soon as the device has room. The baseline.</summary>
/// <typeparam name="T">The caller's handle for an I/O.</typeparam>
public sealed class FifoScheduler<T> : IoScheduler<T>
    where T : class
{
    private readonly Queue<(T Item, IoDescriptor Io)> _queue = new(256);

    /// <inheritdoc/>
    public override string Name => "fifo";

    /// <inheritdoc/>
    public override int Count => _queue.Count;

    /// <inheritdoc/>
    public override void Enqueue(T item, in IoDescriptor io) => _queue.Enqueue((item, io));

    /// <inheritdoc/>
    public override bool TryDequeue(long nowNs, out T item, out IoDescriptor io)
    {
        if (_queue.TryDequeue(out var entry))
        {
            item = entry.Item;
            io = entry.Io;
            return true;
        }

        item = null!;
        io = default;
        return false;
    }

    /// <inheritdoc/>
    public override long NextEligibleNs(long nowNs) => _queue.Count == 0 ? long.MaxValue : nowNs;

    /// <inheritdoc/>
    public override bool IsThrottled(int tenant, long nowNs) => false;
}
