using System.Diagnostics;
using Hci.Core.Blocks;
using Hci.Core.Buffers;

namespace Hci.Bench;

/// <summary>
/// One fio-style job: its own thread, queue, requests and buffers; keeps <c>iodepth</c> requests in flight and
/// records each completion's latency. Nothing is allocated per I/O.
/// </summary>
internal sealed unsafe class Job : IBlockCompletionHandler
{
    private readonly BenchOptions _options;
    private readonly BlockDevice _device;
    private readonly int _index;
    private readonly long _blocks;
    private BlockQueue? _queue;
    private AlignedBufferPool? _pool;
    private BlockRequest[] _requests = [];
    private ulong _rng;
    private long _nextSequential;
    private long _measureFrom;
    private long _stopAt;
    private long _bytesLeft;
    private volatile bool _stop;

    public Job(BenchOptions options, BlockDevice device, int index)
    {
        _options = options;
        _device = device;
        _index = index;
        _blocks = device.Geometry.Capacity / options.BlockSize;
        _rng = 0x9E3779B97F4A7C15UL * (ulong)(index + 1);
        _bytesLeft = options.TimeBased ? long.MaxValue : device.Geometry.Capacity;
    }

    public LatencyHistogram Reads { get; } = new();

    public LatencyHistogram Writes { get; } = new();

    public long Errors { get; private set; }

    public string? FirstError { get; private set; }

    public Thread? Thread { get; private set; }

    public bool Done { get; private set; }

    /// <summary>Starts the job's thread; measurement starts at <paramref name="measureFrom"/> and I/O stops at <paramref name="stopAt"/> (timestamps).</summary>
    public void Start(long measureFrom, long stopAt, Barrier ready)
    {
        _measureFrom = measureFrom;
        _stopAt = stopAt;
        using (ExecutionContext.SuppressFlow())
        {
            Thread = new Thread(() => Run(ready)) { IsBackground = true, Name = $"hci-bench job {_index}" };
            Thread.Start();
        }
    }

    public void SetWindow(long measureFrom, long stopAt)
    {
        Volatile.Write(ref _measureFrom, measureFrom);
        Volatile.Write(ref _stopAt, stopAt);
    }

    public void Stop() => _stop = true;

    public void OnCompleted(BlockRequest request)
    {
        long now = Stopwatch.GetTimestamp();
        if (!request.Succeeded)
        {
            Errors++;
            FirstError ??= request.ToException(_device.Name)?.Message;
            _stop = true;
            return;
        }

        if (now >= _measureFrom && now <= _stopAt)
        {
            long ns = (long)((now - request.UserTag) * s_nsPerTick);
            (request.Operation == BlockOperation.Read ? Reads : Writes).Record(ns);
        }

        if (_stop || now >= _stopAt || _bytesLeft <= 0)
        {
            return;
        }

        Issue(request, now);
    }

    private static readonly double s_nsPerTick = 1e9 / Stopwatch.Frequency;

    private void Run(Barrier ready)
    {
        try
        {
            int depth = _options.IoDepth;
            _queue = _device.CreateQueue(depth);
            int bufferSize = (_options.BlockSize + 4095) & ~4095;
            _pool = new AlignedBufferPool(bufferSize, depth);
            if (_options.FixedBuffers)
            {
                _queue.TryRegisterBuffers([_pool.Slab]);
            }

            _requests = new BlockRequest[depth];
            for (int i = 0; i < depth; i++)
            {
                var buffer = _pool.Rent();
                Random.Shared.NextBytes(buffer.Span);
                _requests[i] = new BlockRequest { Handler = this, UserState = buffer };
            }

            _nextSequential = 0;
            ready.SignalAndWait();
            long now = Stopwatch.GetTimestamp();
            foreach (var r in _requests)
            {
                if (_bytesLeft <= 0)
                {
                    break;
                }

                Issue(r, now);
            }

            var queue = _queue;
            while (queue.InFlight > 0)
            {
                queue.Poll(1);
            }
        }
        catch (Exception ex)
        {
            Errors++;
            FirstError ??= ex.Message;
        }
        finally
        {
            _queue?.Dispose();
            foreach (var r in _requests)
            {
                r.Dispose();
            }

            _pool?.Dispose();
            Done = true;
        }
    }

    private void Issue(BlockRequest request, long now)
    {
        var buffer = (AlignedBuffer)request.UserState!;
        long block;
        if (_options.IsRandom)
        {
            block = (long)(Next() % (ulong)_blocks);
        }
        else
        {
            block = _nextSequential;
            _nextSequential = block + 1 >= _blocks ? 0 : block + 1;
        }

        var op = _options.Rw switch
        {
            Pattern.Read or Pattern.RandRead => BlockOperation.Read,
            Pattern.Write or Pattern.RandWrite => BlockOperation.Write,
            _ => (int)(Next() % 100) < _options.RwMixRead ? BlockOperation.Read : BlockOperation.Write,
        };
        var request2 = request;
        request2.SetReadWrite(op, block * _options.BlockSize, buffer.Pointer, _options.BlockSize);
        request2.UserState = buffer;
        request2.UserTag = now;
        _bytesLeft -= _options.BlockSize;
        _queue!.Submit(request2);
    }

    private ulong Next()
    {
        // xorshift64*: fast and allocation-free.
        ulong x = _rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        _rng = x;
        return x * 0x2545F4914F6CDD1DUL;
    }
}
