using System.Diagnostics;
using Hci.Core.Blocks;
using Hci.Core.Buffers;
using Hci.Core.Reactors;

namespace Hci.Bench;

/// <summary>
/// One fio-style job: a poller on a reactor of its own, with its queue, requests and buffers; keeps <c>iodepth</c>
/// requests in flight and records each completion's latency. Nothing is allocated per I/O.
/// </summary>
internal sealed unsafe class Job : IBlockCompletionHandler, IPoller
{
    private readonly BenchOptions _options;
    private readonly BlockDevice _device;
    private readonly int _index;
    private readonly long _first;
    private readonly long _blocks;
    private readonly long[]? _generation; // verify: the last generation acknowledged per block of the job's part (0: never)
    private readonly bool[]? _busy; // verify: a request is in flight on the block
    private long _nextGeneration;
    private BlockQueue? _queue;
    private AlignedBufferPool? _pool;
    private BlockRequest[] _requests = [];
    private ulong _rng;
    private long _nextSequential;
    private long _measureFrom;
    private long _stopAt;
    private long _bytesLeft;
    private volatile bool _stop;
    private Reactor? _reactor;
    private IDisposable? _registration;
    private readonly TaskCompletionSource _done = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public Job(BenchOptions options, BlockDevice device, int index)
    {
        _options = options;
        _device = device;
        _index = index;
        // The region: the whole device, or [offset, offset + size) with --offset; with --verify each job takes its own
        // contiguous part, so no two jobs ever have the same block in flight.
        long capacity = device.Geometry.Capacity / options.BlockSize;
        long first = options.Offset / options.BlockSize;
        if (first >= capacity)
        {
            throw new ArgumentException($"--offset={options.Offset} is at or past the end of the device ({device.Geometry.Capacity} bytes)");
        }

        long length = options.Offset == 0 && !options.Verify ? capacity : Math.Min(options.Size > 0 ? options.Size / options.BlockSize : long.MaxValue, capacity - first);

        if (options.Verify)
        {
            long part = length / options.NumJobs;
            if (part <= options.IoDepth)
            {
                throw new ArgumentException($"--verify: each job's part of the region ({part} blocks) must be larger than --iodepth={options.IoDepth}");
            }

            first += part * index;
            length = part;
            _generation = new long[length];
            _busy = new bool[length];
        }

        _first = first;
        _blocks = length;
        _rng = 0x9E3779B97F4A7C15UL * (ulong)(index + 1);
        _bytesLeft = options.TimeBased ? long.MaxValue : device.Geometry.Capacity;
    }

    public LatencyHistogram Reads { get; } = new();

    public LatencyHistogram Writes { get; } = new();

    public long Errors { get; private set; }

    /// <summary>--verify: reads that were checked against a generation this run wrote.</summary>
    public long Verified { get; private set; }

    public string? FirstError { get; private set; }

    public bool Done => _done.Task.IsCompleted;

    /// <summary>Completes when the job has stopped and freed its queue.</summary>
    public Task Finished => _done.Task;

    /// <summary>
    /// Starts the job's reactor and readies its queue and buffers there; I/O starts with <see cref="Go"/>.
    /// Measurement starts at <paramref name="measureFrom"/> and I/O stops at <paramref name="stopAt"/> (timestamps).
    /// </summary>
    /// <returns>Completes when the job is ready.</returns>
    public Task PrepareAsync(long measureFrom, long stopAt)
    {
        _measureFrom = measureFrom;
        _stopAt = stopAt;

        // Like fio's io_uring engine, a job waits in the kernel for its completions (no poll window): the comparison
        // is ring against ring, not polling against waiting. A vhost-user job with --polling polls the used ring
        // instead of sleeping on interrupts (the longest window there is: it sleeps only after a second of nothing).
        // Without --polling a vhost-user job keeps the reactor's default window: it looks at the used ring a few
        // microseconds before it asks the back-end for an interrupt, as a guest's virtio driver under NAPI would.
        var window = !_options.VhostUser ? TimeSpan.Zero : _options.Polling ? TimeSpan.FromSeconds(1) : new ReactorOptions().PollWindow;
        _reactor = new Reactor(new ReactorOptions { Name = $"hci-bench job {_index}", PollWindow = window });
        return _reactor.InvokeAsync(Prepare);
    }

    /// <summary>Starts the I/O on the job's reactor.</summary>
    public void Go() => _reactor!.Post(Start);

    /// <summary>Stops the job's reactor once the job is done.</summary>
    public void Close() => _reactor?.Dispose();

    public void SetWindow(long measureFrom, long stopAt)
    {
        Volatile.Write(ref _measureFrom, measureFrom);
        Volatile.Write(ref _stopAt, stopAt);
    }

    public void Stop() => _stop = true;

    public void OnCompleted(BlockRequest request)
    {
        long now = Stopwatch.GetTimestamp();
        request.EndTrace(now);
        if (!request.Succeeded)
        {
            if (_busy != null)
            {
                _busy[(request.Offset / _options.BlockSize) - _first] = false;
            }

            Errors++;
            FirstError ??= request.ToException(_device.Name)?.Message;
            _stop = true;
            return;
        }

        if (_generation != null && !CheckAndRecord(request))
        {
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

    /// <summary>Nothing to do per turn but to notice the end: completions resubmit from their handler.</summary>
    public PollStatus Poll()
    {
        if (_queue is { InFlight: 0 } && (_stop || _started) && !Done)
        {
            Finish();
        }

        return PollStatus.Idle;
    }

    private bool _started;

    private void Prepare()
    {
        try
        {
            int depth = _options.IoDepth;
            _queue = _reactor!.OpenQueue(_device, depth);
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
                // A process that reaches its device directly: the container class (what --breakdown files it under).
                _requests[i] = new BlockRequest { Handler = this, UserState = buffer, Class = IoClass.Container };
            }

            _nextSequential = 0;
            _registration = _reactor.AddPoller(this);
        }
        catch (Exception ex)
        {
            Errors++;
            FirstError ??= ex.Message;
            Finish();
        }
    }

    private void Start()
    {
        _started = true;
        long now = Stopwatch.GetTimestamp();
        foreach (var r in _requests)
        {
            if (_bytesLeft <= 0 || _stop)
            {
                break;
            }

            Issue(r, now);
        }
    }

    private void Finish()
    {
        _registration?.Dispose();
        if (_queue != null)
        {
            _reactor!.ReleaseQueue(_queue);
            _queue = null;
        }

        foreach (var r in _requests)
        {
            r.Dispose();
        }

        _pool?.Dispose();
        _done.TrySetResult();
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
        if (_busy != null)
        {
            // One request per block at a time: a read then checks the last acknowledged write, nothing in between.
            while (_busy[block])
            {
                block = block + 1 == _blocks ? 0 : block + 1;
            }

            _busy[block] = true;
            if (op == BlockOperation.Write)
            {
                FillVerifiable(buffer.Span[.._options.BlockSize], _first + block, ++_nextGeneration);
            }
        }

        var request2 = request;
        request2.StartTrace(now);
        request2.SetReadWrite(op, (_first + block) * _options.BlockSize, buffer.Pointer, _options.BlockSize);
        request2.UserState = buffer;
        request2.UserTag = now;
        _bytesLeft -= _options.BlockSize;
        _queue!.Submit(request2);
    }

    private const ulong VerifyMagic = 0x4649524556494348; // "HCIVERIF"

    // Header: magic, block, generation, XxHash3 of the rest; the rest: a stream that depends on block and generation.
    private static void FillVerifiable(Span<byte> block, long index, long generation)
    {
        ulong x = ((ulong)index * 0x9E3779B97F4A7C15UL) ^ ((ulong)generation * 0xD6E8FEB86659FD93UL) ^ 1;
        var words = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(block[32..]);
        for (int i = 0; i < words.Length; i++)
        {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            words[i] = x * 0x2545F4914F6CDD1DUL;
        }

        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(block, VerifyMagic);
        System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(block[8..], index);
        System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(block[16..], generation);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(block[24..], System.IO.Hashing.XxHash3.HashToUInt64(block[32..]));
    }

    // A write's generation becomes the block's; a read of a block this run wrote must hold exactly that generation.
    private bool CheckAndRecord(BlockRequest request)
    {
        long index = request.Offset / _options.BlockSize;
        long rel = index - _first;
        _busy![rel] = false;
        var data = ((AlignedBuffer)request.UserState!).Span[.._options.BlockSize];
        long generation = System.Buffers.Binary.BinaryPrimitives.ReadInt64LittleEndian(data[16..]);
        if (request.Operation == BlockOperation.Write)
        {
            _generation![rel] = generation;
            return true;
        }

        long expected = _generation![rel];
        if (expected == 0)
        {
            return true; // not written by this run: nothing to check it against
        }

        ulong magic = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(data);
        long block = System.Buffers.Binary.BinaryPrimitives.ReadInt64LittleEndian(data[8..]);
        ulong hash = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(data[24..]);
        string? problem = magic != VerifyMagic ? "no verify header"
            : block != index ? $"the header of block {block}"
            : generation != expected ? $"generation {generation}, expected {expected}"
            : hash != System.IO.Hashing.XxHash3.HashToUInt64(data[32..]) ? "a payload that does not match its hash"
            : null;
        if (problem == null)
        {
            Verified++;
            return true;
        }

        Errors++;
        FirstError ??= $"verify: block {index} (offset {request.Offset}) holds {problem}";
        return false;
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
