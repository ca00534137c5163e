using System.Runtime.InteropServices;
using Hci.Core.Blocks;
using Hci.Core.Modules;

namespace Hci.Core.Devices.Decorators;

/// <summary>
/// Wraps a device and models its volatile write cache, for power-loss tests: a write without force unit access is
/// kept in memory (reads see it) until a flush submitted after it completes; <see cref="SimulateCrashAsync"/> then
/// loses what was not made durable, as a power cut would. The inner device holds only durable data.
/// </summary>
/// <remarks>
/// <para>Durable: writes with <see cref="BlockRequestFlags.ForceUnitAccess"/> (written through), discards and
/// write-zeroes, and every write that completed before a flush that completed. A crash may keep any subset of the
/// other writes' blocks (each logical block independently, as a drive's cache may have written some of them), or
/// none.</para>
/// <para>A test decorator: it allocates per write and takes a lock. The inner device must complete requests in the
/// order they were submitted (a <see cref="MemoryBlockDevice"/> does).</para>
/// </remarks>
public sealed class PowerLossBlockDevice : BlockDeviceDecorator
{
    private readonly Lock _sync = new();
    private readonly Dictionary<long, List<(long Seq, byte[] Data)>> _volatile = new();
    private readonly Dictionary<long, long> _durableSeq = new();
    private long _seq;
    private volatile bool _powerCut;

    /// <summary>Wraps <paramref name="inner"/>.</summary>
    /// <param name="inner">The device that keeps the durable data.</param>
    /// <param name="ownsInner">Dispose the inner device with this one.</param>
    public PowerLossBlockDevice(BlockDevice inner, bool ownsInner = true)
        : base(inner, ownsInner)
    {
    }

    /// <summary>Logical blocks written and not yet durable.</summary>
    public int VolatileBlocks
    {
        get
        {
            lock (_sync)
            {
                return _volatile.Count;
            }
        }
    }

    /// <summary>Cuts the power: from now on every request fails with EIO and changes nothing, until
    /// <see cref="SimulateCrashAsync"/> powers the device up again. Lets a test close the queues of the software that
    /// was running without its last requests reaching the device.</summary>
    public void CutPower() => _powerCut = true;

    /// <summary>
    /// Loses the volatile writes as a power cut would, then the device goes on as a freshly powered one. Call it
    /// while no request is in flight (close the queues first).
    /// </summary>
    /// <param name="survivors">When given, each volatile block independently either reaches the inner device (a random
    /// one of its versions) or is lost; when null, every volatile write is lost.</param>
    /// <returns>How many blocks survived.</returns>
    public async Task<int> SimulateCrashAsync(Random? survivors = null)
    {
        List<(long Block, byte[] Data)> kept = [];
        lock (_sync)
        {
            if (survivors != null)
            {
                foreach (var (block, versions) in _volatile.OrderBy(kv => kv.Key))
                {
                    if (survivors.Next(2) == 0)
                    {
                        kept.Add((block, versions[survivors.Next(versions.Count)].Data));
                    }
                }
            }

            _volatile.Clear();
            _durableSeq.Clear();
            _powerCut = false;
        }

        int lbs = Geometry.LogicalBlockSize;
        using var buffer = new Buffers.AlignedBuffer(lbs);
        foreach (var (block, data) in kept)
        {
            data.CopyTo(buffer.Span);
            await Inner.WriteAsync(block * lbs, buffer.Memory, BlockRequestFlags.None).ConfigureAwait(false);
        }

        if (kept.Count > 0)
        {
            await Inner.FlushAsync().ConfigureAwait(false);
        }

        return kept.Count;
    }

    /// <inheritdoc/>
    protected override BlockQueue CreateQueueCore(int depth) => new Queue(this, depth);

    private unsafe void Capture(BlockRequest request, long seq)
    {
        int lbs = Geometry.LogicalBlockSize;
        long block = request.Offset / lbs;
        byte[]? current = null;
        int filled = 0;
        foreach (var s in request.Segments)
        {
            var span = new ReadOnlySpan<byte>((void*)s.Address, (int)s.Length);
            while (span.Length > 0)
            {
                current ??= new byte[lbs];
                int n = Math.Min(span.Length, lbs - filled);
                span[..n].CopyTo(current.AsSpan(filled));
                filled += n;
                span = span[n..];
                if (filled == lbs)
                {
                    if (!_volatile.TryGetValue(block, out var versions))
                    {
                        _volatile[block] = versions = [];
                    }

                    versions.Add((seq, current));
                    block++;
                    current = null;
                    filled = 0;
                }
            }
        }
    }

    private unsafe void Overlay(BlockRequest request)
    {
        int lbs = Geometry.LogicalBlockSize;
        long first = request.Offset / lbs;
        long count = request.Length / lbs;
        lock (_sync)
        {
            if (_volatile.Count == 0)
            {
                return;
            }

            for (long b = 0; b < count; b++)
            {
                if (_volatile.TryGetValue(first + b, out var versions))
                {
                    var data = versions[^1].Data;
                    CopyIntoSegments(request, b * lbs, data);
                }
            }
        }
    }

    private static unsafe void CopyIntoSegments(BlockRequest request, long at, byte[] data)
    {
        long position = 0;
        int done = 0;
        foreach (var s in request.Segments)
        {
            long end = position + s.Length;
            if (at + done < end && at + done >= position)
            {
                int from = (int)(at + done - position);
                int n = (int)Math.Min(data.Length - done, s.Length - from);
                data.AsSpan(done, n).CopyTo(new Span<byte>((byte*)s.Address + from, n));
                done += n;
                if (done == data.Length)
                {
                    return;
                }
            }

            position = end;
        }
    }

    /// <summary>Forgets the volatile versions of a durable write's blocks that it supersedes.</summary>
    private void Supersede(long offset, long length, long seq)
    {
        int lbs = Geometry.LogicalBlockSize;
        lock (_sync)
        {
            for (long b = offset / lbs; b < (offset + length) / lbs; b++)
            {
                _durableSeq[b] = seq;
                if (_volatile.TryGetValue(b, out var versions))
                {
                    versions.RemoveAll(v => v.Seq < seq);
                    if (versions.Count == 0)
                    {
                        _volatile.Remove(b);
                    }
                }
            }
        }
    }

    private sealed unsafe class Queue : DecoratorQueue
    {
        private readonly PowerLossBlockDevice _device;

        public Queue(PowerLossBlockDevice device, int depth)
            : base(device, device.Inner, depth)
        {
            _device = device;
        }

        protected override void SubmitCore(BlockRequest request)
        {
            if (_device._powerCut)
            {
                CompleteLater(request, -Errno.EIO, BlockError.Device);
                return;
            }

            switch (request.Operation)
            {
                case BlockOperation.Write when (request.Flags & BlockRequestFlags.ForceUnitAccess) == 0:
                    lock (_device._sync)
                    {
                        _device.Capture(request, ++_device._seq);
                    }

                    CompleteLater(request, (int)request.Length);
                    return;
                case BlockOperation.Flush:
                    new FlushJob(this, request).Start();
                    return;
                case BlockOperation.Write or BlockOperation.Discard or BlockOperation.WriteZeroes:
                    // Written through: it reaches the inner device now (which completes in order), so the volatile
                    // versions it supersedes must go now too, or a flush starting before its completion would write
                    // them over it.
                    long seq;
                    lock (_device._sync)
                    {
                        seq = ++_device._seq;
                    }

                    _device.Supersede(request.Offset, request.Length, seq);
                    Forward(request);
                    return;
                default:
                    Forward(request);
                    return;
            }
        }

        protected override int PollCore(int minCompletions, int timeoutMilliseconds)
        {
            int before = InFlight;
            InnerQueue.Poll(minCompletions, timeoutMilliseconds);
            return before - InFlight;
        }

        protected override void OnInnerCompleted(BlockRequest request, int result, BlockError error)
        {
            if (result >= 0)
            {
                if (request.Operation == BlockOperation.Read)
                {
                    _device.Overlay(request);
                }
            }

            Complete(request, result, error);
        }

        private void CompleteFlush(BlockRequest request, int result) => Complete(request, result, result < 0 ? BlockError.Device : BlockError.None);

        /// <summary>A flush: writes the blocks that completed before it to the inner device, flushes it, then forgets
        /// them as volatile.</summary>
        private sealed class FlushJob : IBlockCompletionHandler
        {
            private readonly Queue _queue;
            private readonly BlockRequest _outer;
            private readonly List<(long Block, long Seq)> _committed = [];
            private readonly long _mark;
            private int _pending;
            private int _result;

            public FlushJob(Queue queue, BlockRequest outer)
            {
                _queue = queue;
                _outer = outer;
                var device = queue._device;
                lock (device._sync)
                {
                    _mark = device._seq;
                    foreach (var (block, versions) in device._volatile)
                    {
                        long seq = -1;
                        byte[]? data = null;
                        foreach (var v in versions)
                        {
                            if (v.Seq <= _mark)
                            {
                                seq = v.Seq;
                                data = v.Data;
                            }
                        }

                        if (data != null && (!device._durableSeq.TryGetValue(block, out long durable) || durable < seq))
                        {
                            _committed.Add((block, seq));
                            Writes.Add((block, data));
                        }
                    }
                }
            }

            private List<(long Block, byte[] Data)> Writes { get; } = [];

            public void Start()
            {
                int lbs = _queue._device.Geometry.LogicalBlockSize;
                _pending = Writes.Count;
                if (_pending == 0)
                {
                    SubmitFlush();
                    return;
                }

                foreach (var (block, data) in Writes)
                {
                    byte* buffer = (byte*)NativeMemory.AlignedAlloc((nuint)lbs, 4096);
                    data.CopyTo(new Span<byte>(buffer, lbs));
                    var io = new BlockRequest(1) { Handler = this, UserTag = 1 };
                    io.SetReadWrite(BlockOperation.Write, block * lbs, buffer, lbs);
                    _queue.InnerQueue.Submit(io);
                }
            }

            public void OnCompleted(BlockRequest request)
            {
                if (request.Result < 0)
                {
                    _result = request.Result;
                }

                if (request.UserTag == 1)
                {
                    NativeMemory.AlignedFree((void*)request.Segments[0].Address);
                    request.Dispose();
                    if (--_pending == 0)
                    {
                        SubmitFlush();
                    }

                    return;
                }

                request.Dispose();
                if (_result == 0)
                {
                    var device = _queue._device;
                    lock (device._sync)
                    {
                        foreach (var (block, versions) in device._volatile.ToArray())
                        {
                            versions.RemoveAll(v => v.Seq <= _mark);
                            if (versions.Count == 0)
                            {
                                device._volatile.Remove(block);
                            }
                        }

                        foreach (var (block, seq) in _committed)
                        {
                            device._durableSeq[block] = Math.Max(seq, device._durableSeq.GetValueOrDefault(block));
                        }
                    }
                }

                _queue.CompleteFlush(_outer, _result);
            }

            private void SubmitFlush()
            {
                var io = new BlockRequest(1) { Handler = this, UserTag = 2 };
                io.SetRange(BlockOperation.Flush, 0, 0);
                _queue.InnerQueue.Submit(io);
            }
        }
    }
}
