using Hci.Core.Blocks;
using Hci.Core.Buffers;

namespace Hci.Testing;

/// <summary>
/// A writing and reading workload of independent registers on any <see cref="BlockDevice"/> (such as the vhost-user
/// client of a volume), recorded in a <see cref="RegisterHistory"/> for <see cref="RegisterChecker"/>. Each block of
/// its range is a register; writer w owns the blocks whose index is w modulo the writer count and writes them one
/// request at a time, so writes to a block are sequential; readers read random blocks of the whole range, concurrently
/// with the writers. Every value is a <see cref="RegisterBlock"/> (block, writer, sequence, checksum).
/// </summary>
/// <remarks>
/// <para>The load outlives its devices: when the test moves the volume to another owner it stops a run, connects a new
/// client and starts another run on it; sequence numbers go on from where they were.</para>
/// <para>A request that has not returned within <see cref="Timeout"/> is recorded as unknown and left to finish on its
/// own (its buffer is freed when it does); a write's block is then abandoned by its writer for good, since that write
/// may still land at any time and the next one must not race it.</para>
/// </remarks>
public sealed class RegisterLoad
{
    private readonly long[] _sequences;
    private readonly bool[] _abandoned;
    private readonly List<string> _errors = [];
    private long _lateReturns;

    /// <summary>A load over <paramref name="blocks"/> blocks from <paramref name="firstBlock"/>.</summary>
    /// <param name="history">Where operations are recorded.</param>
    /// <param name="firstBlock">The first block (4 KiB units from the device's start).</param>
    /// <param name="blocks">How many blocks.</param>
    /// <param name="writers">How many writers (each owns every writers-th block).</param>
    public RegisterLoad(RegisterHistory history, long firstBlock, long blocks, int writers)
    {
        ArgumentNullException.ThrowIfNull(history);
        ArgumentOutOfRangeException.ThrowIfLessThan(blocks, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(writers, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(writers, blocks);
        History = history;
        FirstBlock = firstBlock;
        BlockCount = blocks;
        Writers = writers;
        _sequences = new long[blocks];
        _abandoned = new bool[blocks];
    }

    /// <summary>The history the load records into.</summary>
    public RegisterHistory History { get; }

    /// <summary>The first block.</summary>
    public long FirstBlock { get; }

    /// <summary>How many blocks.</summary>
    public long BlockCount { get; }

    /// <summary>How many writers.</summary>
    public int Writers { get; }

    /// <summary>How long a request may take before it is recorded as unknown.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(15);

    /// <summary>How long a worker pauses after a request failed, so that a dead device is not hammered.</summary>
    public TimeSpan PauseAfterFailure { get; init; } = TimeSpan.FromMilliseconds(20);

    /// <summary>Requests recorded as unknown that returned later (their outcome is not in the history).</summary>
    public long LateReturns => Interlocked.Read(ref _lateReturns);

    /// <summary>Blocks abandoned after a write on them timed out.</summary>
    public long AbandonedBlocks
    {
        get
        {
            lock (_abandoned)
            {
                return _abandoned.Count(a => a);
            }
        }
    }

    /// <summary>The first errors seen, for messages.</summary>
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

    /// <summary>The blocks written at least once (write invoked), in order.</summary>
    /// <returns>The block numbers.</returns>
    public long[] WrittenBlocks()
    {
        var written = new List<long>();
        for (long i = 0; i < BlockCount; i++)
        {
            if (Volatile.Read(ref _sequences[i]) > 0)
            {
                written.Add(FirstBlock + i);
            }
        }

        return [.. written];
    }

    /// <summary>Runs every writer (unless <paramref name="write"/> is false) and <paramref name="readers"/> readers on <paramref name="device"/> until
    /// <paramref name="stop"/> is cancelled; each finishes the request it has in flight (or gives up on it after
    /// <see cref="Timeout"/>) first.</summary>
    /// <param name="device">The device.</param>
    /// <param name="readers">How many readers.</param>
    /// <param name="stop">Ends the run.</param>
    /// <param name="seed">Seeds the workers' random choices.</param>
    /// <param name="write">False for readers only (such as a client of an old owner while the writers run on the new
    /// one: a block keeps one writer at a time).</param>
    /// <returns>A task that completes when every worker has stopped.</returns>
    public Task RunAsync(BlockDevice device, int readers, CancellationToken stop, int seed = 1, bool write = true)
    {
        ArgumentNullException.ThrowIfNull(device);
        var workers = new List<Task>();
        for (int w = 0; w < (write ? Writers : 0); w++)
        {
            int writer = w;
            workers.Add(Task.Run(() => WriteLoopAsync(device, writer, new Random(seed * 7919 + writer), stop), CancellationToken.None));
        }

        for (int r = 0; r < readers; r++)
        {
            var random = new Random((seed * 7919) + 1000 + r);
            workers.Add(Task.Run(() => ReadLoopAsync(device, random, stop), CancellationToken.None));
        }

        return Task.WhenAll(workers);
    }

    /// <summary>Reads every block of the range once, <paramref name="depth"/> at a time, recording each read.</summary>
    /// <param name="device">The device.</param>
    /// <param name="depth">Reads in flight.</param>
    /// <returns>A task that completes when every read has returned or timed out.</returns>
    public Task ReadAllAsync(BlockDevice device, int depth = 8)
    {
        ArgumentNullException.ThrowIfNull(device);
        long next = -1;
        return Task.WhenAll(Enumerable.Range(0, depth).Select(_ => Task.Run(async () =>
        {
            var buffer = new AlignedBuffer(RegisterBlock.Size);
            long i;
            while ((i = Interlocked.Increment(ref next)) < BlockCount)
            {
                if (await ReadOneAsync(device, FirstBlock + i, buffer).ConfigureAwait(false) is not { } kept)
                {
                    buffer = new AlignedBuffer(RegisterBlock.Size);
                    continue;
                }

                buffer = kept;
            }

            Free(buffer);
        })));
    }

    /// <summary>Flushes <paramref name="device"/>, recording the flush.</summary>
    /// <param name="device">The device.</param>
    /// <returns>True when it was acknowledged.</returns>
    public async Task<bool> FlushAsync(BlockDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        var flush = History.BeginFlush();
        var request = device.FlushAsync().AsTask();
        try
        {
            await request.WaitAsync(Timeout).ConfigureAwait(false);
            History.Complete(flush, RegisterOutcome.Ok);
            return true;
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            History.Complete(flush, RegisterOutcome.Failed);
            Note($"flush failed: {e.Message}");
        }
        catch (TimeoutException)
        {
            History.Complete(flush, RegisterOutcome.Unknown);
            Note($"flush did not return within {Timeout.TotalSeconds:0.#} s");
        }

        return false;
    }

    private async Task WriteLoopAsync(BlockDevice device, int writer, Random random, CancellationToken stop)
    {
        var buffer = new AlignedBuffer(RegisterBlock.Size);
        long mine = (BlockCount - writer + Writers - 1) / Writers;
        long abandoned = 0;
        try
        {
            while (!stop.IsCancellationRequested)
            {
                long i = writer + (random.NextInt64(mine) * Writers);
                if (IsAbandoned(i))
                {
                    if (abandoned >= mine)
                    {
                        return; // every block of this writer was given up on
                    }

                    continue;
                }

                long block = FirstBlock + i;
                long sequence = ++_sequences[i]; // only this writer writes block i
                RegisterBlock.Encode(buffer.Span, block, writer + 1, sequence);
                var op = History.BeginWrite(block, writer + 1, sequence);
                var request = device.WriteAsync(block * RegisterBlock.Size, buffer.Memory).AsTask();
                try
                {
                    await request.WaitAsync(Timeout, CancellationToken.None).ConfigureAwait(false);
                    History.Complete(op, RegisterOutcome.Ok);
                }
                catch (Exception e) when (e is IOException or ObjectDisposedException)
                {
                    History.Complete(op, RegisterOutcome.Failed);
                    Note($"write of seq {sequence} to block {block} failed: {e.Message}");
                    await Task.Delay(PauseAfterFailure, CancellationToken.None).ConfigureAwait(false);
                }
                catch (TimeoutException)
                {
                    History.Complete(op, RegisterOutcome.Unknown);
                    Note($"write of seq {sequence} to block {block} did not return within {Timeout.TotalSeconds:0.#} s: block abandoned");
                    lock (_abandoned)
                    {
                        _abandoned[i] = true;
                    }

                    abandoned++;

                    Abandon(request, buffer);
                    buffer = new AlignedBuffer(RegisterBlock.Size);
                }
            }
        }
        finally
        {
            Free(buffer);
        }
    }

    private async Task ReadLoopAsync(BlockDevice device, Random random, CancellationToken stop)
    {
        var buffer = new AlignedBuffer(RegisterBlock.Size);
        try
        {
            while (!stop.IsCancellationRequested)
            {
                var kept = await ReadOneAsync(device, FirstBlock + random.NextInt64(BlockCount), buffer).ConfigureAwait(false);
                buffer = kept ?? new AlignedBuffer(RegisterBlock.Size);
            }
        }
        finally
        {
            Free(buffer);
        }
    }

    // Returns the buffer to reuse, or null when the read was given up on and keeps it.
    private async Task<AlignedBuffer?> ReadOneAsync(BlockDevice device, long block, AlignedBuffer buffer)
    {
        var op = History.BeginRead(block);
        var request = device.ReadAsync(block * RegisterBlock.Size, buffer.Memory).AsTask();
        try
        {
            await request.WaitAsync(Timeout, CancellationToken.None).ConfigureAwait(false);
            History.CompleteRead(op, RegisterBlock.Decode(block, buffer.Span));
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            History.Complete(op, RegisterOutcome.Failed);
            Note($"read of block {block} failed: {e.Message}");
            await Task.Delay(PauseAfterFailure, CancellationToken.None).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            History.Complete(op, RegisterOutcome.Unknown);
            Note($"read of block {block} did not return within {Timeout.TotalSeconds:0.#} s");
            Abandon(request, buffer);
            return null;
        }

        return buffer;
    }

    private bool IsAbandoned(long i)
    {
        lock (_abandoned)
        {
            return _abandoned[i];
        }
    }

    // The request still owns the buffer: free it when the request returns, whatever it returns.
    private void Abandon(Task request, AlignedBuffer buffer) =>
        _ = request.ContinueWith(
            t =>
            {
                _ = t.Exception; // observed: it was recorded as unknown
                Interlocked.Increment(ref _lateReturns);
                Free(buffer);
            },
            CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously,
            TaskScheduler.Default);

    private static void Free(AlignedBuffer buffer) => ((IDisposable)buffer).Dispose();

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
