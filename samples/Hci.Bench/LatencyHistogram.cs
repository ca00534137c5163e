using System.Numerics;

namespace Hci.Bench;

/// <summary>
/// Log-linear histogram of nanosecond latencies: 32 linear buckets per power of two (bucket midpoints within 1.6%),
/// preallocated, so recording never allocates.
/// </summary>
internal sealed class LatencyHistogram
{
    private const int SubBits = 6;
    private const int SubCount = 1 << SubBits;
    private readonly long[] _counts = new long[64 * SubCount];

    public long Count { get; private set; }

    public long Min { get; private set; } = long.MaxValue;

    public long Max { get; private set; }

    public double Sum { get; private set; }

    public double SumSquares { get; private set; }

    public double Mean => Count == 0 ? 0 : Sum / Count;

    public double StdDev => Count < 2 ? 0 : Math.Sqrt(Math.Max(0, (SumSquares - (Sum * Sum / Count)) / (Count - 1)));

    public void Record(long nanoseconds)
    {
        if (nanoseconds < 0)
        {
            nanoseconds = 0;
        }

        _counts[Index(nanoseconds)]++;
        Count++;
        Sum += nanoseconds;
        SumSquares += (double)nanoseconds * nanoseconds;
        if (nanoseconds < Min)
        {
            Min = nanoseconds;
        }

        if (nanoseconds > Max)
        {
            Max = nanoseconds;
        }
    }

    public void Add(LatencyHistogram other)
    {
        for (int i = 0; i < _counts.Length; i++)
        {
            _counts[i] += other._counts[i];
        }

        Count += other.Count;
        Sum += other.Sum;
        SumSquares += other.SumSquares;
        Min = Math.Min(Min, other.Min);
        Max = Math.Max(Max, other.Max);
    }

    /// <summary>The value below which <paramref name="percent"/> of the samples lie (bucket midpoint).</summary>
    public long Percentile(double percent)
    {
        if (Count == 0)
        {
            return 0;
        }

        long rank = (long)Math.Ceiling(percent / 100.0 * Count);
        rank = Math.Clamp(rank, 1, Count);
        long seen = 0;
        for (int i = 0; i < _counts.Length; i++)
        {
            seen += _counts[i];
            if (seen >= rank)
            {
                return Math.Clamp(Midpoint(i), Min, Max);
            }
        }

        return Max;
    }

    private static int Index(long v)
    {
        if (v < SubCount)
        {
            return (int)v;
        }

        int msb = 63 - BitOperations.LeadingZeroCount((ulong)v);
        int shift = msb - SubBits + 1;
        return (shift * SubCount) + (int)((v >> shift) & (SubCount - 1)) - 0;
    }

    private static long Midpoint(int index)
    {
        if (index < SubCount)
        {
            return index;
        }

        int shift = index / SubCount;
        long sub = index % SubCount;
        long low = sub << shift;
        return low + ((1L << shift) / 2);
    }
}
