using Hci.Core.Blocks;
using Hci.Core.Buffers;

namespace Hci.Core.Tests;

/// <summary>The contract every device keeps, run over every implementation.</summary>
public sealed class BlockDeviceContractTests
{
    public static TheoryData<DeviceKind> AllKinds => new(Enum.GetValues<DeviceKind>());

    public static TheoryData<DeviceKind> PersistentKinds => new(Enum.GetValues<DeviceKind>().Where(TestDevice.IsPersistent));

    [Theory]
    [MemberData(nameof(AllKinds))]
    public async Task GeometryIsCoherentAndReportsTheRequestedCapacity(DeviceKind kind)
    {
        await using var t = TestDevice.Create(kind);
        var g = t.Device.Geometry;
        Assert.Equal(TestDevice.DefaultSize, g.Capacity);
        Assert.True(int.IsPow2(g.LogicalBlockSize));
        Assert.Equal(0, g.Capacity % g.LogicalBlockSize);
        Assert.True(g.MaxTransferBytes >= g.LogicalBlockSize);
        Assert.True(g.MaxSegments >= 1);
        Assert.True(g.QueueCount >= 1);
        Assert.False(string.IsNullOrEmpty(t.Device.Engine));
    }

    [Theory]
    [MemberData(nameof(PersistentKinds))]
    public async Task RandomWritesReadBackExactlyAtRandomOffsetsAndSizes(DeviceKind kind)
    {
        await using var t = TestDevice.Create(kind);
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

    [Theory]
    [MemberData(nameof(PersistentKinds))]
    public async Task ScatterGatherWriteAndReadMoveEverySegmentInOrder(DeviceKind kind)
    {
        await using var t = TestDevice.Create(kind);
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

    [Theory]
    [MemberData(nameof(PersistentKinds))]
    public async Task ConcurrentWritersOnDisjointRangesNeverDisturbEachOther(DeviceKind kind)
    {
        await using var t = TestDevice.Create(kind);
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

    [Theory]
    [MemberData(nameof(AllKinds))]
    public async Task FlushAndForceUnitAccessWritesSucceedWhereSupported(DeviceKind kind)
    {
        await using var t = TestDevice.Create(kind);
        var d = t.Device;
        using var buffer = new AlignedBuffer(d.Geometry.LogicalBlockSize);
        Assert.True(d.Supports(BlockDeviceCapabilities.Flush));
        await d.WriteAsync(0, buffer.Memory);
        await d.FlushAsync();
        if (d.Supports(BlockDeviceCapabilities.ForceUnitAccess))
        {
            await d.WriteAsync(0, buffer.Memory, BlockRequestFlags.ForceUnitAccess);
        }
        else
        {
            var ex = await Assert.ThrowsAsync<BlockDeviceException>(() => d.WriteAsync(0, buffer.Memory, BlockRequestFlags.ForceUnitAccess).AsTask());
            Assert.Equal(BlockError.Unsupported, ex.Error);
        }
    }

    [Theory]
    [MemberData(nameof(AllKinds))]
    public async Task CapabilitiesAreWhatTheKindPromises(DeviceKind kind)
    {
        await using var t = TestDevice.Create(kind);
        Assert.Equal(TestDevice.Promises(kind), t.Device.Capabilities);
    }

    [Theory]
    [MemberData(nameof(AllKinds))]
    public async Task WriteZeroesZeroesExactlyTheRangeAndLeavesNeighboursAlone(DeviceKind kind)
    {
        await using var t = TestDevice.Create(kind);
        var d = t.Device;
        int lbs = d.Geometry.LogicalBlockSize;
        Assert.True(d.Supports(BlockDeviceCapabilities.WriteZeroes)); // every kind here offers it
        using var buffer = new AlignedBuffer(8 * lbs);
        buffer.Span.Fill(0xAB);
        await d.WriteAsync(0, buffer.Memory);
        await d.WriteZeroesAsync(2L * lbs, 3L * lbs); // completes without an error on every kind
        buffer.Span.Fill(0xEE);
        await d.ReadAsync(0, buffer.Memory);
        if (!TestDevice.IsPersistent(kind))
        {
            // The null device stores nothing and says so: no persistent data, reads leave the buffer as it was.
            Assert.False(d.Supports(BlockDeviceCapabilities.PersistentData));
            Assert.True(buffer.Span.IndexOfAnyExcept((byte)0xEE) < 0, "a read from the null device changed the buffer");
            return;
        }

        for (int i = 0; i < 8 * lbs; i++)
        {
            byte expected = i >= 2 * lbs && i < 5 * lbs ? (byte)0 : (byte)0xAB;
            Assert.True(buffer.Span[i] == expected, $"byte {i} is {buffer.Span[i]:x2}, expected {expected:x2}");
        }
    }

    [Theory]
    [MemberData(nameof(AllKinds))]
    public async Task DiscardIsAcceptedWhereSupportedAndReadsZeroesWhereAdvertised(DeviceKind kind)
    {
        await using var t = TestDevice.Create(kind);
        var d = t.Device;
        int lbs = d.Geometry.LogicalBlockSize;
        using var buffer = new AlignedBuffer(4 * lbs);
        buffer.Span.Fill(0x5A);
        await d.WriteAsync(0, buffer.Memory);
        if (!d.Supports(BlockDeviceCapabilities.Discard))
        {
            var ex = await Assert.ThrowsAsync<BlockDeviceException>(() => d.DiscardAsync(0, lbs).AsTask());
            Assert.Equal(BlockError.Unsupported, ex.Error);
            Assert.Equal(Errno.EOPNOTSUPP, ex.Errno);
            return;
        }

        await d.DiscardAsync(lbs, 2L * lbs); // completes without an error
        buffer.Span.Fill(0xEE);
        await d.ReadAsync(0, buffer.Memory);
        if (!TestDevice.IsPersistent(kind))
        {
            // The null device: the discard completed, and the flags promise nothing about what reads return.
            Assert.False(d.Supports(BlockDeviceCapabilities.PersistentData));
            Assert.False(d.Supports(BlockDeviceCapabilities.DiscardZeroesData));
            Assert.True(buffer.Span.IndexOfAnyExcept((byte)0xEE) < 0, "a read from the null device changed the buffer");
            return;
        }

        // The neighbours keep their data on every kind that stores data.
        Assert.True(buffer.Span[..lbs].IndexOfAnyExcept((byte)0x5A) < 0, "the block before the discarded range changed");
        Assert.True(buffer.Span[(3 * lbs)..].IndexOfAnyExcept((byte)0x5A) < 0, "the block after the discarded range changed");
        for (int b = 1; b < 3; b++)
        {
            var block = buffer.Span.Slice(b * lbs, lbs);
            if (d.Supports(BlockDeviceCapabilities.DiscardZeroesData))
            {
                Assert.True(block.IndexOfAnyExcept((byte)0) < 0, $"discarded block {b} does not read zeroes though the device says it does");
            }
            else
            {
                // Without the promise a discarded block reads as it was or as zeroes, never as anything else.
                Assert.True(block.IndexOfAnyExcept((byte)0x5A) < 0 || block.IndexOfAnyExcept((byte)0) < 0, $"discarded block {b} reads neither its data nor zeroes");
            }
        }

        // Where the test can see the device behind a front-end (vhost-user to the Hci back-end), the discard
        // reached it: its own range reads zeroes there.
        if (t.Backing is { } backing && backing.Supports(BlockDeviceCapabilities.DiscardZeroesData))
        {
            using var behind = new AlignedBuffer(2 * lbs);
            await backing.ReadAsync(lbs, behind.Memory);
            Assert.True(behind.Span.IndexOfAnyExcept((byte)0) < 0, "the discard did not reach the device behind the front-end");
        }
    }

    public static TheoryData<DeviceKind, string> BadInputs()
    {
        var data = new TheoryData<DeviceKind, string>();
        foreach (var kind in Enum.GetValues<DeviceKind>())
        {
            foreach (var input in new[] { "misaligned-offset", "misaligned-length", "empty", "past-end", "straddles-end", "negative-offset", "too-large", "too-many-segments", "misaligned-buffer", "discard-past-end", "write-zeroes-misaligned", "fua-on-read" })
            {
                data.Add(kind, input);
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(BadInputs))]
    public async Task BadRequestsAreRefusedWithATypedErrorAndTheDeviceKeepsWorking(DeviceKind kind, string input)
    {
        await using var t = TestDevice.Create(kind);
        var d = t.Device;
        var g = d.Geometry;
        int lbs = g.LogicalBlockSize;
        using var big = new AlignedBuffer(g.MaxTransferBytes + (2 * lbs));
        using var request = new BlockRequest(g.MaxSegments + 1);
        BlockError expected;
        int expectedErrno; // written here, never taken from the code under test
        unsafe
        {
            switch (input)
            {
                case "misaligned-offset":
                    request.SetReadWrite(BlockOperation.Read, 1, big.Pointer, lbs);
                    expected = BlockError.Misaligned;
                    expectedErrno = Errno.EINVAL;
                    break;
                case "misaligned-length":
                    request.SetReadWrite(BlockOperation.Write, 0, big.Pointer, lbs + 1);
                    expected = BlockError.Misaligned;
                    expectedErrno = Errno.EINVAL;
                    break;
                case "empty":
                    request.Reset();
                    request.Operation = BlockOperation.Read;
                    expected = BlockError.OutOfRange;
                    expectedErrno = Errno.ERANGE;
                    break;
                case "past-end":
                    request.SetReadWrite(BlockOperation.Read, g.Capacity, big.Pointer, lbs);
                    expected = BlockError.OutOfRange;
                    expectedErrno = Errno.ERANGE;
                    break;
                case "straddles-end":
                    request.SetReadWrite(BlockOperation.Write, g.Capacity - lbs, big.Pointer, 2 * lbs);
                    expected = BlockError.OutOfRange;
                    expectedErrno = Errno.ERANGE;
                    break;
                case "negative-offset":
                    request.SetReadWrite(BlockOperation.Read, -lbs, big.Pointer, lbs);
                    expected = BlockError.OutOfRange;
                    expectedErrno = Errno.ERANGE;
                    break;
                case "too-large":
                    request.SetReadWrite(BlockOperation.Read, 0, big.Pointer, g.MaxTransferBytes + lbs);
                    expected = BlockError.TooLarge;
                    expectedErrno = Errno.EINVAL;
                    break;
                case "too-many-segments":
                    request.Reset();
                    request.Operation = BlockOperation.Read;
                    for (int i = 0; i <= g.MaxSegments; i++)
                    {
                        request.AddSegment(big.Pointer, lbs / 8);
                    }

                    // Keep the length aligned so that only the segment count is wrong.
                    request.Length = ((request.Length / lbs) + 1) * lbs;
                    expected = BlockError.BadSegments;
                    expectedErrno = Errno.EINVAL;

                    break;
                case "misaligned-buffer":
                    request.SetReadWrite(BlockOperation.Read, 0, big.Pointer + 1, lbs);
                    expected = g.BufferAlignment > 1 ? BlockError.Misaligned : BlockError.None;
                    expectedErrno = g.BufferAlignment > 1 ? Errno.EINVAL : 0;
                    break;
                case "discard-past-end":
                    request.SetRange(BlockOperation.Discard, g.Capacity - lbs, 2L * lbs);
                    expected = BlockError.OutOfRange;
                    expectedErrno = Errno.ERANGE;
                    break;
                case "write-zeroes-misaligned":
                    request.SetRange(BlockOperation.WriteZeroes, 0, lbs / 2);
                    expected = BlockError.Misaligned;
                    expectedErrno = Errno.EINVAL;
                    break;
                case "fua-on-read":
                    request.SetReadWrite(BlockOperation.Read, 0, big.Pointer, lbs, BlockRequestFlags.ForceUnitAccess);
                    expected = BlockError.Unsupported;
                    expectedErrno = Errno.EOPNOTSUPP;
                    break;
                default:
                    throw new ArgumentOutOfRangeException(nameof(input));
            }
        }

        Assert.Equal(expected, d.Validate(request, out int errno));
        Assert.Equal(expectedErrno, errno);
        int result = await d.ExecuteAsync(request);
        Assert.Equal(expected, request.Error);
        if (expected != BlockError.None)
        {
            Assert.True(result < 0);
            Assert.Equal(expectedErrno, -result);
            Assert.Equal(expectedErrno, request.ToException(d.Name)!.Errno);
            var ex = request.ToException(d.Name)!;
            Assert.Contains("refused", ex.Message);
            Assert.Equal(request.Operation, ex.Operation);
            Assert.Equal(request.Offset, ex.Offset);
        }

        // The device still serves a good request afterwards.
        using var ok = new AlignedBuffer(lbs);
        await d.WriteAsync(0, ok.Memory);
        await d.ReadAsync(0, ok.Memory);
    }

    [Theory]
    [MemberData(nameof(AllKinds))]
    public async Task AsyncApiThrowsBlockDeviceExceptionWithOperationOffsetAndErrno(DeviceKind kind)
    {
        await using var t = TestDevice.Create(kind);
        var d = t.Device;
        using var buffer = new AlignedBuffer(d.Geometry.LogicalBlockSize);
        var ex = await Assert.ThrowsAsync<BlockDeviceException>(() => d.ReadAsync(d.Geometry.Capacity, buffer.Memory).AsTask());
        Assert.Equal(BlockOperation.Read, ex.Operation);
        Assert.Equal(d.Geometry.Capacity, ex.Offset);
        Assert.Equal(BlockError.OutOfRange, ex.Error);
        Assert.Equal(Errno.ERANGE, ex.Errno);
        Assert.Contains("outside the device", ex.Message);
    }

    [Theory]
    [MemberData(nameof(PersistentKinds))]
    public async Task BatchedSubmissionsStartAtThePollAndMoveTheRightData(DeviceKind kind)
    {
        await using var t = TestDevice.Create(kind);
        var d = t.Device;
        int lbs = d.Geometry.LogicalBlockSize;
        using var pool = new AlignedBufferPool(lbs, 32, alignment: Math.Min(lbs, 4096));
        using var queue = d.CreateQueue(16);
        queue.BatchSubmissions = true;
        var handler = new CountingHandler();
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

    [Theory]
    [MemberData(nameof(AllKinds))]
    public async Task MoreRequestsThanTheQueueDepthAreHeldNotRefused(DeviceKind kind)
    {
        await using var t = TestDevice.Create(kind);
        var d = t.Device;
        int lbs = d.Geometry.LogicalBlockSize;
        using var pool = new AlignedBufferPool(lbs, 64, alignment: Math.Min(lbs, 4096));
        using var queue = d.CreateQueue(4);
        var handler = new CountingHandler();
        var requests = new BlockRequest[64];
        unsafe
        {
            for (int i = 0; i < requests.Length; i++)
            {
                requests[i] = new BlockRequest { Handler = handler };
                requests[i].SetReadWrite(i % 2 == 0 ? BlockOperation.Write : BlockOperation.Read, (long)i * lbs, pool.Rent().Pointer, lbs);
                queue.Submit(requests[i]);
            }
        }

        Assert.Equal(64, queue.InFlight);
        int delivered = 0;
        while (queue.InFlight > 0)
        {
            delivered += queue.Poll();
        }

        Assert.Equal(64, delivered);
        Assert.Equal(64, handler.Count);
        Assert.All(requests, r => Assert.True(r.Succeeded));
    }

    [Theory]
    [MemberData(nameof(AllKinds))]
    public async Task DisposingAQueueWithIoInFlightCompletesEveryRequest(DeviceKind kind)
    {
        await using var t = TestDevice.Create(kind);
        var d = t.Device;
        int lbs = d.Geometry.LogicalBlockSize;
        using var pool = new AlignedBufferPool(lbs, 32, alignment: Math.Min(lbs, 4096));
        var handler = new CountingHandler();
        var queue = d.CreateQueue(8);
        unsafe
        {
            for (int i = 0; i < 32; i++)
            {
                var r = new BlockRequest { Handler = handler };
                r.SetReadWrite(BlockOperation.Write, (long)i * lbs, pool.Rent().Pointer, lbs);
                queue.Submit(r);
            }
        }

        queue.Poll(0, 0);
        queue.Dispose();
        Assert.Equal(32, handler.Count);
        Assert.Equal(0, queue.InFlight);
        Assert.Throws<ObjectDisposedException>(() => queue.Poll());
    }

    [Theory]
    [MemberData(nameof(AllKinds))]
    public async Task APollWithATimeoutAndNothingInFlightReturnsAndWakeCutsItShort(DeviceKind kind)
    {
        await using var t = TestDevice.Create(kind);
        using var queue = t.Device.CreateQueue(4);
        const int PollTimeoutMs = 60_000;
        var polled = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        var pollTook = TimeSpan.Zero;
        var started = new ManualResetEventSlim();
        var owner = new Thread(() =>
        {
            try
            {
                // A queue belongs to one thread: every poll happens here; only Wake comes from elsewhere.
                Assert.Equal(0, queue.Poll(1, 10));
                Assert.Equal(0, queue.Poll()); // nothing in flight and no timeout: returns at once
                started.Set();
                var watch = System.Diagnostics.Stopwatch.StartNew();
                int delivered = queue.Poll(1, PollTimeoutMs);
                pollTook = watch.Elapsed;
                polled.SetResult(delivered);
            }
            catch (Exception e)
            {
                started.Set();
                polled.TrySetException(e);
            }
        });
        owner.Start();
        started.Wait();

        // A wake is remembered until a poll consumes it, so one is enough whether the owner is already waiting or not.
        // The poll would wait a minute; only the wake can end it within the ten seconds given here, so a Wake that
        // does nothing fails instead of passing when the poll times out.
        queue.Wake();
        try
        {
            Assert.Equal(0, await polled.Task.WaitAsync(TimeSpan.FromSeconds(10)));
        }
        catch (TimeoutException)
        {
            owner.Join(); // the poll ends by its own timeout; only then may the queue and device go
            Assert.Fail("Wake() did not end the owner's poll within 10 s (the poll's own timeout is 60 s)");
        }

        Assert.True(pollTook < TimeSpan.FromMilliseconds(PollTimeoutMs / 2), $"the poll took {pollTook}: it ended by its timeout, not the wake");
        owner.Join();
    }

    [Theory]
    [MemberData(nameof(AllKinds))]
    public async Task SubmittingARequestTwiceWhileInFlightIsRefused(DeviceKind kind)
    {
        await using var t = TestDevice.Create(kind);
        var d = t.Device;
        using var buffer = new AlignedBuffer(d.Geometry.LogicalBlockSize);
        using var queue = d.CreateQueue(4);
        using var r = new BlockRequest { Handler = new CountingHandler() };
        unsafe
        {
            r.SetReadWrite(BlockOperation.Read, 0, buffer.Pointer, buffer.Length);
        }

        queue.Submit(r);
        Assert.Throws<InvalidOperationException>(() => queue.Submit(r));
        Assert.Throws<InvalidOperationException>(() => r.Reset());
        while (queue.InFlight > 0)
        {
            queue.Poll();
        }

        Assert.True(r.Succeeded);
    }

    private sealed class CountingHandler : IBlockCompletionHandler
    {
        public int Count;

        public void OnCompleted(BlockRequest request) => Count++;
    }
}
