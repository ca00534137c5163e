using System.Diagnostics;
using Hci.Core.Blocks;
using Hci.Core.Buffers;
using Hci.Core.Devices;

namespace Hci.Core.Tests;

/// <summary>
/// What a queue and the asynchronous API do at their edges: a completion handler that throws, a wake that comes
/// before the first wait, a request posted while the device stops, and a queue disposed with requests at the device.
/// </summary>
public sealed class QueueHardeningTests
{
    /// <summary>Counts completions per request; throws once, on a chosen request.</summary>
    private sealed class Recorder(BlockRequest? throwOn) : IBlockCompletionHandler
    {
        public readonly Dictionary<BlockRequest, int> Completions = [];
        public BlockRequest? ThrowOn = throwOn;

        public void OnCompleted(BlockRequest request)
        {
            Completions[request] = Completions.GetValueOrDefault(request) + 1;
            if (request == ThrowOn)
            {
                ThrowOn = null;
                throw new InvalidOperationException("injected: the handler failed");
            }
        }
    }

    private static unsafe BlockRequest[] Reads(AlignedBuffer buffer, int count, IBlockCompletionHandler handler)
    {
        var requests = new BlockRequest[count];
        for (int i = 0; i < count; i++)
        {
            requests[i] = new BlockRequest { Handler = handler };
            requests[i].SetReadWrite(BlockOperation.Read, i * 4096L, buffer.Pointer + (i * 4096), 4096);
        }

        return requests;
    }

    [Fact]
    public async Task AHandlerThatThrowsLeavesTheRingConsistentAndEveryRequestCompletesOnce()
    {
        await using var t = CoreDevices.IoUring();
        using var buffer = new AlignedBuffer(64 * 4096);
        var recorder = new Recorder(null);
        using var queue = t.Device.CreateQueue(16);
        var requests = Reads(buffer, 8, recorder);
        recorder.ThrowOn = requests[0];
        foreach (var r in requests)
        {
            queue.Submit(r);
        }

        // Every request's CQE lands; the first handler throws out of the poll that delivers it.
        var deadline = Stopwatch.StartNew();
        bool threw = false;
        while (queue.InFlight > 0)
        {
            Assert.True(deadline.Elapsed < TimeSpan.FromSeconds(30), $"{queue.InFlight} requests never completed");
            try
            {
                queue.Poll(queue.InFlight, 1000);
            }
            catch (InvalidOperationException e) when (e.Message.StartsWith("injected", StringComparison.Ordinal))
            {
                threw = true;
            }
        }

        Assert.True(threw);
        Assert.All(requests, r => Assert.Equal(1, recorder.Completions[r]));

        // The slots are reused: a stale CQE left in the ring would complete one of these twice (or a freed slot).
        for (int round = 0; round < 20; round++)
        {
            var more = Reads(buffer, 8, recorder);
            foreach (var r in more)
            {
                queue.Submit(r);
            }

            while (queue.InFlight > 0)
            {
                queue.Poll(queue.InFlight, 1000);
            }

            Assert.All(more, r => Assert.Equal(1, recorder.Completions[r]));
            Assert.All(more, r => Assert.True(r.Succeeded));
        }
    }

    [Fact]
    public async Task AWakeBeforeTheFirstWaitEndsThatWait()
    {
        await using var t = CoreDevices.IoUring();
        using var queue = t.Device.CreateQueue(8);
        queue.Wake();
        var watch = Stopwatch.StartNew();
        queue.Poll(1, 20_000);
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(10), $"the wake was lost: the poll waited {watch.Elapsed.TotalSeconds:F1} s");
    }

    [Fact]
    public async Task DisposingAQueueWhoseHandlerThrowsKeepsItOpenUntilEveryRequestHasCompleted()
    {
        await using var t = CoreDevices.IoUring();
        using var buffer = new AlignedBuffer(64 * 4096);
        var recorder = new Recorder(null);
        var queue = t.Device.CreateQueue(16);
        var requests = Reads(buffer, 8, recorder);
        recorder.ThrowOn = requests[0];
        foreach (var r in requests)
        {
            queue.Submit(r);
        }

        var deadline = Stopwatch.StartNew();
        while (true)
        {
            Assert.True(deadline.Elapsed < TimeSpan.FromSeconds(30), "the queue never finished draining");
            try
            {
                queue.Dispose();
                break;
            }
            catch (InvalidOperationException e) when (e.Message.StartsWith("injected", StringComparison.Ordinal))
            {
            }
        }

        Assert.All(requests, r => Assert.False(r.IsInFlight));
        Assert.All(requests, r => Assert.Equal(1, recorder.Completions[r]));
    }

    [Fact]
    public async Task ARequestPostedWhileTheDeviceStopsIsAnsweredAndNeverLeftWaiting()
    {
        // The race, made certain: a read passes the reactor's "stopping" check, then the device is disposed and its
        // reactor makes its final drain, and only then does the read reach the inbox.
        var buffer = new byte[4096];
        var device = new MemoryBlockDevice(1 << 20);
        await device.ReadAsync(0, buffer);
        var reactor = device.ReactorForTests!;
        reactor.AfterAdmission = () =>
        {
            reactor.AfterAdmission = null;
            device.DisposeAsync().AsTask().GetAwaiter().GetResult();
        };

        Task read;
        try
        {
            read = device.ReadAsync(0, buffer).AsTask();
        }
        catch (ObjectDisposedException)
        {
            return; // refused at once: answered
        }

        // Answered either way (served, cancelled or refused); a read left in the inbox would never complete.
        var outcome = await Record.ExceptionAsync(() => read.WaitAsync(TimeSpan.FromSeconds(20)));
        Assert.IsNotType<TimeoutException>(outcome);
    }

    [Fact]
    public async Task ReadsRacingADisposeAreAllAnswered()
    {
        // The race: a post that passed the "stopping" check lands in the inbox after the reactor's final drain.
        var buffer = new byte[4096];
        for (int round = 0; round < 300; round++)
        {
            var device = new MemoryBlockDevice(1 << 20);
            await device.ReadAsync(0, buffer); // the reactor exists
            using var go = new ManualResetEventSlim();
            var reader = Task.Run(async () =>
            {
                go.Wait();
                var pending = new List<Task>();
                for (int i = 0; i < 64; i++)
                {
                    try
                    {
                        pending.Add(device.ReadAsync(0, new byte[4096]).AsTask());
                    }
                    catch (ObjectDisposedException)
                    {
                        break;
                    }
                }

                foreach (var p in pending)
                {
                    try
                    {
                        await p;
                    }
                    catch (Exception e) when (e is ObjectDisposedException or BlockDeviceException)
                    {
                    }
                }
            });
            go.Set();
            await device.DisposeAsync();
            // A read left in the inbox would never complete: the deadline turns that into a failure.
            await reader.WaitAsync(TimeSpan.FromSeconds(30));
        }
    }
}
