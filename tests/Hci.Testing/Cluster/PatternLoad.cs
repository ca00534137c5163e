using System.Buffers.Binary;
using System.Diagnostics;
using Hci.Core.Blocks;
using Hci.Core.Buffers;

namespace Hci.Testing;

/// <summary>
/// A client load of known patterns on a volume (any <see cref="BlockDevice"/>, such as the vhost-user client): each
/// 4 KiB block written holds its block number and a generation, so any copy of it (through the volume or on a replica's
/// device) can be checked against the newest acknowledged generation. Writers own disjoint blocks, so at most one
/// write per block is in flight and the expected content of every block is known exactly.
/// </summary>
public sealed class PatternLoad
{
    /// <summary>The block size the load writes and checks.</summary>
    public const int BlockSize = 4096;

    private readonly BlockDevice _device;
    private readonly long[] _acked;
    private readonly long[] _attempted;
    private readonly List<string> _errors = [];
    private long _writes;
    private long _reads;
    private long _failedWrites;
    private long _failedReads;
    private long _staleReads;
    private long _windowStart = long.MaxValue;
    private long _windowWrites;
    private long _windowFastest = long.MaxValue;

    /// <summary>A load over the first <paramref name="blocks"/> blocks of <paramref name="device"/>.</summary>
    /// <param name="device">The volume as a client sees it.</param>
    /// <param name="blocks">How many 4 KiB blocks the load may touch.</param>
    public PatternLoad(BlockDevice device, long blocks)
    {
        _device = device;
        _acked = new long[blocks];
        _attempted = new long[blocks];
    }

    private PatternLoad(BlockDevice device, long[] acked, long[] attempted)
    {
        _device = device;
        _acked = acked;
        _attempted = attempted;
    }

    /// <summary>The same blocks and generations through another client (such as the volume's new owner), with counters
    /// of its own.</summary>
    /// <param name="device">The other client.</param>
    /// <returns>A load that knows what this one wrote.</returns>
    public PatternLoad WithDevice(BlockDevice device) => new(device, _acked, _attempted);

    /// <summary>Writes acknowledged so far.</summary>
    public long Writes => Interlocked.Read(ref _writes);

    /// <summary>Reads that returned so far (right or not).</summary>
    public long Reads => Interlocked.Read(ref _reads);

    /// <summary>Writes that failed.</summary>
    public long FailedWrites => Interlocked.Read(ref _failedWrites);

    /// <summary>Reads that failed.</summary>
    public long FailedReads => Interlocked.Read(ref _failedReads);

    /// <summary>Reads that returned something other than the newest acknowledged data.</summary>
    public long StaleReads => Interlocked.Read(ref _staleReads);

    /// <summary>Acknowledged writes started since <see cref="StartLatencyWindow"/>, and the shortest time one of them
    /// took: a bound on every write's latency that does not depend on how fast the machine is.</summary>
    public (long Writes, TimeSpan Fastest) LatencyWindow
    {
        get
        {
            long fastest = Interlocked.Read(ref _windowFastest);
            return (Interlocked.Read(ref _windowWrites), fastest == long.MaxValue ? TimeSpan.MaxValue : TimeSpan.FromSeconds((double)fastest / Stopwatch.Frequency));
        }
    }

    /// <summary>Starts timing the writes this load starts from now on (<see cref="LatencyWindow"/>); writes already in
    /// flight are not counted.</summary>
    public void StartLatencyWindow()
    {
        Interlocked.Exchange(ref _windowStart, long.MaxValue);
        Interlocked.Exchange(ref _windowWrites, 0);
        Interlocked.Exchange(ref _windowFastest, long.MaxValue);
        Interlocked.Exchange(ref _windowStart, Stopwatch.GetTimestamp());
    }

    /// <summary>The first errors seen, for failure messages.</summary>
    public string Errors
    {
        get
        {
            lock (_errors)
            {
                return string.Join('\n', _errors);
            }
        }
    }

    /// <summary>The generation of <paramref name="block"/> last acknowledged (0: never written).</summary>
    /// <param name="block">The block.</param>
    /// <returns>The generation.</returns>
    public long Acked(long block) => Volatile.Read(ref _acked[block]);

    /// <summary>The blocks <paramref name="from"/>..<paramref name="from"/>+<paramref name="count"/>.</summary>
    /// <param name="from">The first block.</param>
    /// <param name="count">How many.</param>
    /// <returns>The block numbers.</returns>
    public static long[] Range(long from, long count)
    {
        var blocks = new long[count];
        for (long i = 0; i < count; i++)
        {
            blocks[i] = from + i;
        }

        return blocks;
    }

    /// <summary>Writes every block of <paramref name="blocks"/> once, <paramref name="run"/> blocks per request, by
    /// <paramref name="depth"/> writers.</summary>
    /// <param name="blocks">Consecutive runs of blocks (a multiple of <paramref name="run"/> in length, each run contiguous).</param>
    /// <param name="run">Blocks per request.</param>
    /// <param name="depth">Requests in flight.</param>
    /// <returns>A task that completes when every write has returned.</returns>
    public Task FillAsync(IReadOnlyList<long> blocks, int run = 16, int depth = 8)
    {
        long next = -1;
        return Task.WhenAll(Enumerable.Range(0, depth).Select(_ => Task.Run(async () =>
        {
            using var buffer = new AlignedBuffer(run * BlockSize);
            long i;
            while ((i = Interlocked.Increment(ref next) * run) < blocks.Count)
            {
                int n = (int)Math.Min(run, blocks.Count - i);
                var gens = new long[n];
                for (int b = 0; b < n; b++)
                {
                    gens[b] = Interlocked.Increment(ref _attempted[blocks[(int)i + b]]);
                    Fill(blocks[(int)i + b], gens[b], buffer.Span.Slice(b * BlockSize, BlockSize));
                }

                if (await TryWriteAsync(blocks[(int)i] * BlockSize, buffer.Memory[..(n * BlockSize)]).ConfigureAwait(false))
                {
                    for (int b = 0; b < n; b++)
                    {
                        Volatile.Write(ref _acked[blocks[(int)i + b]], gens[b]);
                    }
                }
            }
        })));
    }

    /// <summary>Writes random blocks of <paramref name="blocks"/> (one 4 KiB block per request) with
    /// <paramref name="depth"/> requests in flight until <paramref name="stop"/> is cancelled; a failed write is counted
    /// and the load goes on.</summary>
    /// <param name="blocks">The blocks to write; writer w owns the ones at indexes w, w+depth, ...</param>
    /// <param name="depth">Requests in flight.</param>
    /// <param name="stop">Ends the load (writes in flight complete first).</param>
    /// <param name="seed">The random seed.</param>
    /// <returns>A task that completes when every writer has stopped.</returns>
    public Task WriteAsync(IReadOnlyList<long> blocks, int depth, CancellationToken stop, int seed = 1) =>
        Task.WhenAll(Enumerable.Range(0, depth).Select(w => Task.Run(async () =>
        {
            var random = new Random(seed + w);
            int mine = (blocks.Count - w + depth - 1) / depth;
            using var buffer = new AlignedBuffer(BlockSize);
            while (!stop.IsCancellationRequested && mine > 0)
            {
                long block = blocks[w + (random.Next(mine) * depth)];
                long gen = Interlocked.Increment(ref _attempted[block]);
                Fill(block, gen, buffer.Span);
                if (await TryWriteAsync(block * BlockSize, buffer.Memory).ConfigureAwait(false))
                {
                    Volatile.Write(ref _acked[block], gen);
                }
            }
        })));

    /// <summary>Reads random blocks of <paramref name="blocks"/> with <paramref name="depth"/> requests in flight until
    /// <paramref name="stop"/> is cancelled, and checks that each returns the newest acknowledged generation (no writes
    /// may run meanwhile).</summary>
    /// <param name="blocks">The blocks to read.</param>
    /// <param name="depth">Requests in flight.</param>
    /// <param name="stop">Ends the load.</param>
    /// <returns>A task that completes when every reader has stopped.</returns>
    public Task ReadAsync(IReadOnlyList<long> blocks, int depth, CancellationToken stop) =>
        Task.WhenAll(Enumerable.Range(0, depth).Select(w => Task.Run(async () =>
        {
            var random = new Random(1000 + w);
            using var buffer = new AlignedBuffer(BlockSize);
            while (!stop.IsCancellationRequested)
            {
                long block = blocks[random.Next(blocks.Count)];
                await ReadOneAsync(block, buffer).ConfigureAwait(false);
            }
        })));

    /// <summary>Reads every block of <paramref name="blocks"/> once and checks it; returns how many were wrong.</summary>
    /// <param name="blocks">The blocks.</param>
    /// <param name="depth">Requests in flight.</param>
    /// <param name="tolerateUnacknowledged">Also accept a generation written but never acknowledged (a write in flight
    /// when its writer failed).</param>
    /// <returns>The number of blocks that failed to read or read back other than the newest acknowledged data.</returns>
    public async Task<long> VerifyAsync(IReadOnlyList<long> blocks, int depth = 8, bool tolerateUnacknowledged = false)
    {
        long before = StaleReads + FailedReads;
        long next = -1;
        await Task.WhenAll(Enumerable.Range(0, depth).Select(_ => Task.Run(async () =>
        {
            using var buffer = new AlignedBuffer(BlockSize);
            long i;
            while ((i = Interlocked.Increment(ref next)) < blocks.Count)
            {
                await ReadOneAsync(blocks[(int)i], buffer, tolerateUnacknowledged).ConfigureAwait(false);
            }
        }))).ConfigureAwait(false);
        return StaleReads + FailedReads - before;
    }

    /// <summary>True when <paramref name="data"/> is block <paramref name="block"/> at its newest acknowledged generation
    /// (all zeros for a block never written).</summary>
    /// <param name="block">The block.</param>
    /// <param name="data">4 KiB read from anywhere.</param>
    /// <returns>Whether it matches.</returns>
    public bool IsNewest(long block, ReadOnlySpan<byte> data) => Matches(block, Acked(block), data);

    /// <summary>The generation <paramref name="data"/> holds if it is a pattern of <paramref name="block"/>, else -1
    /// (0 for zeros).</summary>
    /// <param name="block">The block.</param>
    /// <param name="data">4 KiB.</param>
    /// <returns>The generation.</returns>
    public static long GenerationOf(long block, ReadOnlySpan<byte> data)
    {
        long gen = BinaryPrimitives.ReadInt64LittleEndian(data[8..]);
        return Matches(block, gen, data) ? gen : -1;
    }

    /// <summary>The pattern of a block at a generation.</summary>
    /// <param name="block">The block.</param>
    /// <param name="generation">The generation (0: zeros).</param>
    /// <param name="into">4 KiB.</param>
    public static void Fill(long block, long generation, Span<byte> into)
    {
        if (generation == 0)
        {
            into[..BlockSize].Clear();
            return;
        }

        BinaryPrimitives.WriteInt64LittleEndian(into, block);
        BinaryPrimitives.WriteInt64LittleEndian(into[8..], generation);
        ulong x = ((ulong)block * 0x9E3779B97F4A7C15UL) ^ ((ulong)generation * 0xC2B2AE3D27D4EB4FUL);
        for (int i = 16; i < BlockSize; i += 8)
        {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            BinaryPrimitives.WriteUInt64LittleEndian(into[i..], x);
        }
    }

    private static bool Matches(long block, long generation, ReadOnlySpan<byte> data)
    {
        Span<byte> expected = stackalloc byte[BlockSize];
        Fill(block, generation, expected);
        return data[..BlockSize].SequenceEqual(expected);
    }

    private async Task ReadOneAsync(long block, AlignedBuffer buffer, bool tolerateUnacknowledged = false)
    {
        long acked = Acked(block);
        try
        {
            await _device.ReadAsync(block * BlockSize, buffer.Memory).ConfigureAwait(false);
        }
        catch (BlockDeviceException e)
        {
            Interlocked.Increment(ref _failedReads);
            Note($"read of block {block} failed: {e.Message}");
            return;
        }

        Interlocked.Increment(ref _reads);
        long gen = GenerationOf(block, buffer.Span);
        bool newest = tolerateUnacknowledged ? gen >= acked && gen <= Volatile.Read(ref _attempted[block]) : Matches(block, acked, buffer.Span);
        if (!newest)
        {
            Interlocked.Increment(ref _staleReads);
            Note($"block {block} read back generation {GenerationOf(block, buffer.Span)} (block field {BinaryPrimitives.ReadInt64LittleEndian(buffer.Span)}), expected {acked}");
        }
    }

    private async Task<bool> TryWriteAsync(long offset, ReadOnlyMemory<byte> data)
    {
        long started = Stopwatch.GetTimestamp();
        try
        {
            await _device.WriteAsync(offset, data).ConfigureAwait(false);
            Interlocked.Increment(ref _writes);
            if (started >= Interlocked.Read(ref _windowStart))
            {
                Timed(Stopwatch.GetTimestamp() - started);
            }

            return true;
        }
        catch (BlockDeviceException e)
        {
            Interlocked.Increment(ref _failedWrites);
            Note($"write at {offset} failed: {e.Message}");
            return false;
        }
    }

    private void Timed(long ticks)
    {
        Interlocked.Increment(ref _windowWrites);
        long fastest;
        while (ticks < (fastest = Interlocked.Read(ref _windowFastest)) && Interlocked.CompareExchange(ref _windowFastest, ticks, fastest) != fastest)
        {
        }
    }

    private void Note(string error)
    {
        lock (_errors)
        {
            if (_errors.Count < 20)
            {
                _errors.Add(error);
            }
        }
    }
}
