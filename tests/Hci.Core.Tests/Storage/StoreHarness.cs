using System.Diagnostics;
using Hci.Core.Blocks;
using Hci.Core.Buffers;
using Hci.Core.Modules;
using Hci.Core.Replication;
using Hci.Core.Storage;

namespace Hci.Core.Tests.Storage;

/// <summary>Drives one store queue from the test's thread: submit, poll until answered (with a deadline).</summary>
internal sealed unsafe class StoreHarness : IReplicaCompletionHandler, IDisposable
{
    public const int Block = ReplicaGeometry.BlockSize;

    private int _answered;

    public StoreHarness(ReplicaStore store)
    {
        Store = store;
        Queue = store.CreateQueue();
        Buffer = new AlignedBuffer(ReplicaGeometry.MaxTransfer + Block);
        Request = new ReplicaRequest(8) { Handler = this };
    }

    public ReplicaStore Store { get; }

    public ReplicaStoreQueue Queue { get; }

    public AlignedBuffer Buffer { get; }

    public ReplicaRequest Request { get; }

    public static ReplicaStore Format(BlockDevice device, long extentSize = 1 << 20, int maxVolumes = 16)
        => ReplicaStore.FormatAsync(device, new ReplicaStoreOptions { ExtentSize = extentSize, MaxVolumes = maxVolumes }).GetAwaiter().GetResult();

    public static ReplicaStore Open(BlockDevice device) => ReplicaStore.OpenAsync(device).GetAwaiter().GetResult();

    /// <summary>Prepares the request; data operations get one segment over the harness buffer.</summary>
    public ReplicaRequest Prepare(ReplicaOperation op, ulong volume, long extent, long offset = 0, int length = Block, ulong epoch = 1, bool segment = true)
    {
        var r = Request;
        r.Reset();
        r.Operation = op;
        r.VolumeId = volume;
        r.Extent = extent;
        r.Offset = offset;
        r.Epoch = epoch;
        if (segment && length > 0)
        {
            r.AddSegment(Buffer.Pointer, length);
        }
        else
        {
            r.Length = length;
        }

        return r;
    }

    public ReplicaStatus Run(ReplicaRequest r)
    {
        int before = _answered;
        Queue.Submit(r);
        Assert.Equal(before, _answered); // never answered from Submit
        Drive(() => _answered > before, "the store's answer");
        return r.Status;
    }

    public ReplicaStatus Write(ulong volume, long extent, long offset, int length, long writeId, ulong epoch = 1, BlockRequestFlags flags = BlockRequestFlags.None)
    {
        var r = Prepare(ReplicaOperation.Write, volume, extent, offset, length, epoch);
        r.Flags = flags;
        Pattern.Fill(Buffer.Span[..length], volume, extent, offset, writeId);
        return Run(r);
    }

    public ReplicaStatus Read(ulong volume, long extent, long offset, int length, ulong epoch = 1)
    {
        Buffer.Span[..length].Fill(0xCC);
        return Run(Prepare(ReplicaOperation.Read, volume, extent, offset, length, epoch));
    }

    public ReplicaStatus Simple(ReplicaOperation op, ulong volume, long extent = 0, ulong epoch = 1, ulong argument = 0)
    {
        var r = Prepare(op, volume, extent, 0, 0, epoch, segment: false);
        r.Argument = argument;
        return Run(r);
    }

    public void Drive(Func<bool> condition, string what)
    {
        var watch = Stopwatch.StartNew();
        while (!condition())
        {
            Queue.Poll();
            Assert.True(watch.Elapsed < Deadline.Default, $"timed out waiting for {what}");
        }
    }

    public void OnReplicaCompleted(ReplicaRequest request) => _answered++;

    public void Dispose()
    {
        Queue.Dispose();
        Request.Dispose();
        ((IDisposable)Buffer).Dispose();
    }
}

/// <summary>Block contents that say where and by which write they were written.</summary>
internal static class Pattern
{
    public static void Fill(Span<byte> span, ulong volume, long extent, long offset, long writeId)
    {
        for (int b = 0; b < span.Length / StoreHarness.Block; b++)
        {
            var block = span.Slice(b * StoreHarness.Block, StoreHarness.Block);
            long at = offset + ((long)b * StoreHarness.Block);
            BitConverter.TryWriteBytes(block, volume);
            BitConverter.TryWriteBytes(block[8..], extent);
            BitConverter.TryWriteBytes(block[16..], at);
            BitConverter.TryWriteBytes(block[24..], writeId);
            byte seed = (byte)(writeId * 31 + at / StoreHarness.Block);
            for (int i = 32; i < block.Length; i++)
            {
                block[i] = (byte)(seed + i);
            }
        }
    }

    /// <summary>The write id a block holds: -1 for zeros, -2 for anything that is not a whole pattern of this place.</summary>
    public static long IdOf(ReadOnlySpan<byte> block, ulong volume, long extent, long at)
    {
        if (block.IndexOfAnyExcept((byte)0) < 0)
        {
            return -1;
        }

        long id = BitConverter.ToInt64(block[24..]);
        if (BitConverter.ToUInt64(block) != volume || BitConverter.ToInt64(block[8..]) != extent || BitConverter.ToInt64(block[16..]) != at)
        {
            return -2;
        }

        byte seed = (byte)(id * 31 + at / StoreHarness.Block);
        for (int i = 32; i < block.Length; i++)
        {
            if (block[i] != (byte)(seed + i))
            {
                return -2;
            }
        }

        return id;
    }
}

/// <summary>Counts the requests that reach a device.</summary>
internal sealed class CountingBlockDevice(BlockDevice inner) : BlockDeviceDecorator(inner, ownsInner: true)
{
    private long _reads;
    private long _writes;

    public long Reads => Interlocked.Read(ref _reads);

    public long Writes => Interlocked.Read(ref _writes);

    protected override BlockQueue CreateQueueCore(int depth) => new Queue(this, depth);

    private sealed class Queue(CountingBlockDevice device, int depth) : DecoratorQueue(device, device.Inner, depth)
    {
        protected override void SubmitCore(BlockRequest request)
        {
            if (request.Operation == BlockOperation.Read)
            {
                Interlocked.Increment(ref device._reads);
            }
            else
            {
                Interlocked.Increment(ref device._writes);
            }

            Forward(request);
        }

        protected override int PollCore(int minCompletions, int timeoutMilliseconds)
        {
            int before = InFlight;
            InnerQueue.Poll(minCompletions, timeoutMilliseconds);
            return before - InFlight;
        }
    }
}
