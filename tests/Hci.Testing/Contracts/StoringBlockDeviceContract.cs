using Hci.Core.Blocks;
using Hci.Core.Buffers;
using Xunit;

namespace Hci.Testing;

/// <summary>
/// The contract of a device that stores data, on top of <see cref="BlockDeviceContract"/>: what is written reads
/// back exactly, at random offsets and sizes, through scatter-gather, from concurrent writers and batched queues.
/// </summary>
public abstract class StoringBlockDeviceContract : BlockDeviceContract
{
    [Fact]
    public async Task RandomWritesReadBackExactlyAtRandomOffsetsAndSizes()
    {
        await using var t = Create(DefaultSize);
        var d = t.Device;
        int lbs = d.Geometry.LogicalBlockSize;
        var rng = new Random(1234);
        var model = new byte[d.Geometry.Capacity];
        using var buffer = new AlignedBuffer(d.Geometry.MaxTransferBytes);
        for (int i = 0; i < 200; i++)
        {
            int blocks = rng.Next(1, Math.Min(64, d.Geometry.MaxTransferBytes / lbs) + 1);
            long offset = (long)rng.Next(0, (int)(d.Geometry.BlockCount - blocks + 1)) * lbs;
            int length = blocks * lbs;
            if (rng.Next(3) == 0)
            {
                await d.ReadAsync(offset, buffer.Memory[..length]);
                Assert.True(buffer.Span[..length].SequenceEqual(model.AsSpan((int)offset, length)), $"read of {length} at {offset} differs from what was written");
            }
            else
            {
                rng.NextBytes(buffer.Span[..length]);
                buffer.Span[..length].CopyTo(model.AsSpan((int)offset, length));
                await d.WriteAsync(offset, buffer.Memory[..length]);
            }
        }

        // Read everything back.
        for (long offset = 0; offset < d.Geometry.Capacity; offset += d.Geometry.MaxTransferBytes)
        {
            int length = (int)Math.Min(d.Geometry.MaxTransferBytes, d.Geometry.Capacity - offset);
            await d.ReadAsync(offset, buffer.Memory[..length]);
            Assert.True(buffer.Span[..length].SequenceEqual(model.AsSpan((int)offset, length)), $"final read at {offset} differs");
        }
    }

    [Fact]
    public async Task ScatterGatherWriteAndReadMoveEverySegmentInOrder()
    {
        await using var t = Create(DefaultSize);
        var d = t.Device;
        int lbs = d.Geometry.LogicalBlockSize;
        using var pool = new AlignedBufferPool(lbs, 8, alignment: Math.Min(lbs, 4096));
        var buffers = Enumerable.Range(0, 4).Select(_ => pool.Rent()).ToArray();
        for (int i = 0; i < buffers.Length; i++)
        {
            buffers[i].Span.Fill((byte)(0x10 + i));
        }

        using var request = new BlockRequest(4);
        request.Operation = BlockOperation.Write;
        request.Offset = 8L * lbs;
        unsafe
        {
            foreach (var b in buffers)
            {
                request.AddSegment(b.Pointer, lbs);
            }
        }

        Assert.Equal(4 * lbs, await d.ExecuteAsync(request));
        Assert.True(request.Succeeded);

        using var readBack = new AlignedBuffer(4 * lbs);
        await d.ReadAsync(8L * lbs, readBack.Memory);
        for (int i = 0; i < 4; i++)
        {
            Assert.All(readBack.Span.Slice(i * lbs, lbs).ToArray(), b => Assert.Equal((byte)(0x10 + i), b));
        }

        // Gather the other way: one contiguous write read into four segments.
        var into = Enumerable.Range(0, 4).Select(_ => pool.Rent()).ToArray();
        request.Reset();
        request.Operation = BlockOperation.Read;
        request.Offset = 8L * lbs;
        unsafe
        {
            foreach (var b in into)
            {
                request.AddSegment(b.Pointer, lbs);
            }
        }

        Assert.Equal(4 * lbs, await d.ExecuteAsync(request));
        for (int i = 0; i < 4; i++)
        {
            Assert.True(into[i].Span.SequenceEqual(readBack.Span.Slice(i * lbs, lbs)));
        }
    }

    [Fact]
    public async Task ConcurrentWritersOnDisjointRangesNeverDisturbEachOther()
    {
        await using var t = Create(DefaultSize);
        var d = t.Device;
        int lbs = d.Geometry.LogicalBlockSize;
        const int writers = 8;
        long region = d.Geometry.Capacity / writers;

        // What each byte must hold afterwards: every writer notes its own acknowledged writes (the ranges are
        // disjoint, so the writers never touch the same bytes of the model). A lost write reads back as the zeroes
        // or older data the model no longer expects.
        var model = new byte[d.Geometry.Capacity];
        await Task.WhenAll(Enumerable.Range(0, writers).Select(w => Task.Run(async () =>
        {
            using var buffer = new AlignedBuffer(4 * lbs);
            var rng = new Random(w);
            for (int i = 0; i < 50; i++)
            {
                long offset = (w * region) + ((long)rng.Next(0, (int)(region / lbs) - 4) * lbs);
                byte value = (byte)(1 + ((w * 50) + i) % 0x7F); // a new value per write: an overwrite that is lost shows
                buffer.Span.Fill(value);
                await d.WriteAsync(offset, buffer.Memory);
                model.AsSpan((int)offset, buffer.Length).Fill(value);
            }
        })));

        // The same through per-thread queues: each thread owns its queue, as a reactor would.
        var threads = Enumerable.Range(0, 4).Select(w => new Thread(() => WriteOwnRangeThroughQueue(d, w, region, lbs))).ToArray();
        foreach (var th in threads)
        {
            th.Start();
        }

        foreach (var th in threads)
        {
            th.Join();
        }

        for (int w = 0; w < 4; w++)
        {
            for (int i = 0; i < 16; i++)
            {
                model.AsSpan((int)((w * region) + (i * 3L * lbs)), lbs).Fill((byte)(0x80 + w));
            }
        }

        using var check = new AlignedBuffer((int)Math.Min(region, d.Geometry.MaxTransferBytes));
        for (long offset = 0; offset < d.Geometry.Capacity; offset += check.Length)
        {
            await d.ReadAsync(offset, check.Memory);
            int diff = check.Span.CommonPrefixLength(model.AsSpan((int)offset, check.Length));
            if (diff < check.Length)
            {
                long at = offset + diff;
                Assert.Fail($"byte at {at} (writer {at / region}'s range) is {check.Span[diff]:x2}, last written {model[at]:x2}: a write was lost or landed elsewhere");
            }
        }
    }

    private static unsafe void WriteOwnRangeThroughQueue(BlockDevice d, int w, long region, int lbs)
    {
        using var queue = d.CreateQueue(16);
        using var pool = new AlignedBufferPool(lbs, 16, alignment: Math.Min(lbs, 4096));
        var requests = new BlockRequest[16];
        for (int i = 0; i < requests.Length; i++)
        {
            var b = pool.Rent();
            b.Span.Fill((byte)(0x80 + w));
            requests[i] = new BlockRequest();
            requests[i].SetReadWrite(BlockOperation.Write, (w * region) + (i * 3L * lbs), b.Pointer, lbs);
            queue.Submit(requests[i]);
        }

        while (queue.InFlight > 0)
        {
            queue.Poll();
        }

        Assert.All(requests, r => Assert.True(r.Succeeded, $"{r.Error} errno {r.Errno}"));
    }

    [Fact]
    public async Task BatchedSubmissionsStartAtThePollAndMoveTheRightData()
    {
        await using var t = Create(DefaultSize);
        var d = t.Device;
        int lbs = d.Geometry.LogicalBlockSize;
        using var pool = new AlignedBufferPool(lbs, 32, alignment: Math.Min(lbs, 4096));
        using var queue = d.CreateQueue(16);
        queue.BatchSubmissions = true;
        var handler = new CompletionCounter();
        var buffers = Enumerable.Range(0, 32).Select(_ => pool.Rent()).ToArray();
        var requests = new BlockRequest[16];
        unsafe
        {
            for (int i = 0; i < 16; i++)
            {
                buffers[i].Span.Fill((byte)(i + 1));
                requests[i] = new BlockRequest { Handler = handler };
                requests[i].SetReadWrite(BlockOperation.Write, (long)i * lbs, buffers[i].Pointer, lbs);
                queue.Submit(requests[i]);
            }

            while (queue.InFlight > 0)
            {
                queue.Poll();
            }

            for (int i = 0; i < 16; i++)
            {
                requests[i].Reset();
                requests[i].SetReadWrite(BlockOperation.Read, (long)i * lbs, buffers[16 + i].Pointer, lbs);
                queue.Submit(requests[i]);
            }

            while (queue.InFlight > 0)
            {
                queue.Poll();
            }
        }

        Assert.Equal(32, handler.Count);
        for (int i = 0; i < 16; i++)
        {
            Assert.True(requests[i].Succeeded);
            Assert.True(buffers[16 + i].Span.SequenceEqual(buffers[i].Span), $"block {i} read back differs");
        }
    }
}
