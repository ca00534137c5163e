using Hci.Core.Blocks;
using Hci.Core.Buffers;
using Xunit;

namespace Hci.Testing;

/// <summary>
/// The contract every block device keeps, written once and run over every implementation: geometry, capabilities,
/// flush, write-zeroes, discard, typed refusal of bad requests, queue depth, batching, wake and disposal.
/// </summary>
/// <remarks>
/// <para>
/// In the manner of System.IO.Pipelines' <c>BasePipeReaderReadAtLeastAsyncTests</c>: the contract is an abstract
/// class and each implementation is a small subclass in its own test project that says how to make a fresh
/// device and what it promises. xunit runs every test of the contract once per subclass.
/// </para>
/// <para>
/// Devices that store data derive from <see cref="StoringBlockDeviceContract"/> instead, which adds the tests that
/// read back what was written; a device that stores nothing (null_blk) derives from this class alone.
/// </para>
/// </remarks>
public abstract class BlockDeviceContract
{
    /// <summary>The capacity every test asks for, unless it needs another.</summary>
    public const long DefaultSize = 16L << 20;

    /// <summary>What the device promises (its capability flags), written in the subclass rather than read from the device.</summary>
    protected abstract BlockDeviceCapabilities Promises { get; }

    /// <summary>Whether data written can be read back: true for the devices of <see cref="StoringBlockDeviceContract"/>.</summary>
    protected bool StoresData => this is StoringBlockDeviceContract;

    /// <summary>Makes a fresh device, with nothing written to it yet.</summary>
    /// <param name="size">Its capacity in bytes.</param>
    /// <returns>The device, and what it stands on.</returns>
    protected abstract DeviceUnderTest Create(long size);

    [Fact]
    public async Task GeometryIsCoherentAndReportsTheRequestedCapacity()
    {
        await using var t = Create(DefaultSize);
        var g = t.Device.Geometry;
        Assert.Equal(DefaultSize, g.Capacity);
        Assert.True(int.IsPow2(g.LogicalBlockSize));
        Assert.Equal(0, g.Capacity % g.LogicalBlockSize);
        Assert.True(g.MaxTransferBytes >= g.LogicalBlockSize);
        Assert.True(g.MaxSegments >= 1);
        Assert.True(g.QueueCount >= 1);
        Assert.False(string.IsNullOrEmpty(t.Device.Engine));
    }

    [Fact]
    public async Task FlushAndForceUnitAccessWritesSucceedWhereSupported()
    {
        await using var t = Create(DefaultSize);
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

    [Fact]
    public async Task CapabilitiesAreWhatTheKindPromises()
    {
        await using var t = Create(DefaultSize);
        Assert.Equal(Promises, t.Device.Capabilities);
    }

    [Fact]
    public async Task WriteZeroesZeroesExactlyTheRangeAndLeavesNeighboursAlone()
    {
        await using var t = Create(DefaultSize);
        var d = t.Device;
        int lbs = d.Geometry.LogicalBlockSize;
        Assert.True(d.Supports(BlockDeviceCapabilities.WriteZeroes)); // every kind here offers it
        using var buffer = new AlignedBuffer(8 * lbs);
        buffer.Span.Fill(0xAB);
        await d.WriteAsync(0, buffer.Memory);
        await d.WriteZeroesAsync(2L * lbs, 3L * lbs); // completes without an error on every kind
        buffer.Span.Fill(0xEE);
        await d.ReadAsync(0, buffer.Memory);
        if (!StoresData)
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

    [Fact]
    public async Task DiscardIsAcceptedWhereSupportedAndReadsZeroesWhereAdvertised()
    {
        await using var t = Create(DefaultSize);
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
        if (!StoresData)
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

    [Theory]
    [InlineData("misaligned-offset")]
    [InlineData("misaligned-length")]
    [InlineData("empty")]
    [InlineData("past-end")]
    [InlineData("straddles-end")]
    [InlineData("negative-offset")]
    [InlineData("too-large")]
    [InlineData("too-many-segments")]
    [InlineData("misaligned-buffer")]
    [InlineData("discard-past-end")]
    [InlineData("write-zeroes-misaligned")]
    [InlineData("fua-on-read")]
    public async Task BadRequestsAreRefusedWithATypedErrorAndTheDeviceKeepsWorking(string input)
    {
        await using var t = Create(DefaultSize);
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

    [Fact]
    public async Task AsyncApiThrowsBlockDeviceExceptionWithOperationOffsetAndErrno()
    {
        await using var t = Create(DefaultSize);
        var d = t.Device;
        using var buffer = new AlignedBuffer(d.Geometry.LogicalBlockSize);
        var ex = await Assert.ThrowsAsync<BlockDeviceException>(() => d.ReadAsync(d.Geometry.Capacity, buffer.Memory).AsTask());
        Assert.Equal(BlockOperation.Read, ex.Operation);
        Assert.Equal(d.Geometry.Capacity, ex.Offset);
        Assert.Equal(BlockError.OutOfRange, ex.Error);
        Assert.Equal(Errno.ERANGE, ex.Errno);
        Assert.Contains("outside the device", ex.Message);
    }

    [Fact]
    public async Task MoreRequestsThanTheQueueDepthAreHeldNotRefused()
    {
        await using var t = Create(DefaultSize);
        var d = t.Device;
        int lbs = d.Geometry.LogicalBlockSize;
        using var pool = new AlignedBufferPool(lbs, 64, alignment: Math.Min(lbs, 4096));
        using var queue = d.CreateQueue(4);
        var handler = new CompletionCounter();
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

    [Fact]
    public async Task DisposingAQueueWithIoInFlightCompletesEveryRequest()
    {
        await using var t = Create(DefaultSize);
        var d = t.Device;
        int lbs = d.Geometry.LogicalBlockSize;
        using var pool = new AlignedBufferPool(lbs, 32, alignment: Math.Min(lbs, 4096));
        var handler = new CompletionCounter();
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

    [Fact]
    public async Task APollWithATimeoutAndNothingInFlightReturnsAndWakeCutsItShort()
    {
        await using var t = Create(DefaultSize);
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

    [Fact]
    public async Task SubmittingARequestTwiceWhileInFlightIsRefused()
    {
        await using var t = Create(DefaultSize);
        var d = t.Device;
        using var buffer = new AlignedBuffer(d.Geometry.LogicalBlockSize);
        using var queue = d.CreateQueue(4);
        using var r = new BlockRequest { Handler = new CompletionCounter() };
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

    [Fact]
    public async Task UsingAQueueFromASecondThreadIsRefusedBeforeAnythingChanges()
    {
        await using var t = Create(DefaultSize);
        using var buffer = new Hci.Core.Buffers.AlignedBuffer(4096);
        var queue = t.Device.CreateQueue(4);
        var request = new Hci.Core.Blocks.BlockRequest { Handler = new CompletionCounter() };
        unsafe
        {
            request.SetReadWrite(Hci.Core.Blocks.BlockOperation.Read, 0, buffer.Pointer, 4096);
        }

        var owner = new Thread(() =>
        {
            queue.Submit(request);
            while (queue.InFlight > 0)
            {
                queue.Poll();
            }
        });
        owner.Start();
        owner.Join();
        Assert.True(request.Succeeded);

        Exception? second = null;
        var other = new Thread(() =>
        {
            try
            {
                queue.Submit(request);
            }
            catch (Exception ex)
            {
                second = ex;
            }
        });
        other.Start();
        other.Join();
        var error = Assert.IsType<InvalidOperationException>(second);
        Assert.Contains("one thread", error.Message);
        Assert.False(request.IsInFlight);
        Assert.Equal(0, queue.InFlight);
        queue.Dispose(); // nothing in flight: any thread may close it
        request.Dispose();
    }
}
