namespace Hci.Transport.Tests.Fuzz;

/// <summary>
/// A seeded source of values aimed at the edges where length and offset arithmetic breaks: 0, 1, a block size
/// and its neighbours, 2^15, 2^16, 2^31 and 2^32 and their neighbours, a device's maximum transfer and its
/// neighbours, and totals that wrap 2^32. The same seed always draws the same sequence, so a failure names its
/// seed and case and replays exactly.
/// </summary>
internal sealed class Boundary(int seed)
{
    public Random Rng { get; } = new(seed);

    public int Seed => seed;

    /// <summary>The classic edges for a block size and a maximum transfer, each with its neighbours.</summary>
    public static ulong[] Edges(ulong blockSize, ulong maxTransfer) =>
    [
        0, 1, 2, blockSize - 1, blockSize, blockSize + 1, 4095, 4096, 4097,
        (1UL << 15) - 1, 1UL << 15, (1UL << 15) + 1, (1UL << 16) - 1, 1UL << 16, (1UL << 16) + 1,
        (1UL << 31) - 1, 1UL << 31, (1UL << 31) + 1, (1UL << 32) - 1, 1UL << 32, (1UL << 32) + 1,
        maxTransfer - 1, maxTransfer, maxTransfer + 1, maxTransfer - blockSize, maxTransfer + blockSize,
    ];

    public bool OneIn(int n) => Rng.Next(n) == 0;

    public int Next(int max) => Rng.Next(max);

    public int Next(int min, int max) => Rng.Next(min, max);

    public T Pick<T>(params ReadOnlySpan<T> values) => values[Rng.Next(values.Length)];

    /// <summary>An edge, or one of its neighbours, or (rarely) anything.</summary>
    public ulong Edge(ulong[] edges) => Rng.Next(10) switch
    {
        0 => (ulong)Rng.NextInt64(),
        1 => edges[Rng.Next(edges.Length)] + (ulong)Rng.Next(-8, 9),
        _ => edges[Rng.Next(edges.Length)],
    };

    /// <summary>A length that fits <paramref name="max"/>, drawn toward its edges.</summary>
    public ulong EdgeAtMost(ulong[] edges, ulong max)
    {
        ulong v = Edge(edges);
        return v <= max ? v : (Rng.Next(2) == 0 ? max : v % (max + 1));
    }
}
