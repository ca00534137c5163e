using Hci.Core.Blocks;

namespace Hci.Core.Devices.Decorators;

/// <summary>A fault to inject into requests that overlap a byte range.</summary>
public sealed class FaultRule
{
    private int _remaining;

    /// <summary>Creates a rule.</summary>
    /// <param name="kind">What to do.</param>
    /// <param name="offset">Start of the byte range.</param>
    /// <param name="length">Length of the byte range; <see cref="long.MaxValue"/> for the rest of the device.</param>
    /// <param name="operation">Only this operation, or null for any (reads only, for torn and corrupt reads).</param>
    /// <param name="errno">The errno of <see cref="FaultKind.Error"/>; EIO by default.</param>
    /// <param name="count">How many requests it hits before it stops; negative for no limit.</param>
    public FaultRule(FaultKind kind, long offset = 0, long length = long.MaxValue, BlockOperation? operation = null, int errno = Blocks.Errno.EIO, int count = -1)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(errno);
        Kind = kind;
        Offset = offset;
        Length = length;
        Operation = operation;
        Errno = errno;
        _remaining = count < 0 ? int.MaxValue : count;
    }

    /// <summary>What the rule does.</summary>
    public FaultKind Kind { get; }

    /// <summary>Start of the byte range.</summary>
    public long Offset { get; }

    /// <summary>Length of the byte range.</summary>
    public long Length { get; }

    /// <summary>The operation it applies to, or null for any.</summary>
    public BlockOperation? Operation { get; }

    /// <summary>The errno returned by <see cref="FaultKind.Error"/>.</summary>
    public int Errno { get; }

    /// <summary>Hits left (<see cref="int.MaxValue"/> for no limit).</summary>
    public int Remaining => Volatile.Read(ref _remaining);

    /// <summary>Requests this rule has hit.</summary>
    public int Hits => _hits;

    private int _hits;

    internal bool Overlaps(long offset, long length)
        => offset < (Length == long.MaxValue ? long.MaxValue : Offset + Length) && Offset < offset + Math.Max(length, 1);

    internal bool Matches(BlockRequest request)
    {
        if (Operation is { } op && op != request.Operation)
        {
            return false;
        }

        if (Kind != FaultKind.Error && request.Operation != BlockOperation.Read)
        {
            return false;
        }

        return request.Operation == BlockOperation.Flush || Overlaps(request.Offset, request.Length);
    }

    internal bool TryConsume()
    {
        while (true)
        {
            int remaining = Volatile.Read(ref _remaining);
            if (remaining <= 0)
            {
                return false;
            }

            if (remaining == int.MaxValue || Interlocked.CompareExchange(ref _remaining, remaining - 1, remaining) == remaining)
            {
                Interlocked.Increment(ref _hits);
                return true;
            }
        }
    }
}
