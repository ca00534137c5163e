using Hci.Core.Blocks;
using Hci.Core.Buffers;
using Hci.Core.Devices;
using Hci.Testing;

namespace Hci.Core.Tests.Blocks;

/// <summary>The per-stage latency record: a traced request's time lands in the stages it passed through, under its
/// class, and an untraced one records nothing. (Background class: nothing else in this test run traces it.)</summary>
public sealed unsafe class RequestStagesTests
{
    [Fact]
    public void ATracedRequestRecordsItsFrontEndDeviceAndCompletionTimeUnderItsClass()
    {
        using var device = new MemoryBlockDevice(1 << 20);
        using var queue = device.CreateQueue(4);
        using var buffer = new AlignedBuffer(4096);
        using var request = new BlockRequest { Class = IoClass.Background, Handler = new CompletionCounter() };
        var before = RequestStages.Snapshot();
        for (int i = 0; i < 10; i++)
        {
            request.Reset();
            request.StartTrace();
            request.SetReadWrite(BlockOperation.Write, 4096L * i, buffer.Pointer, 4096);
            queue.Submit(request);
            while (request.IsInFlight)
            {
                queue.Poll(1);
            }

            request.EndTrace();
            Assert.False(request.IsTraced);
        }

        request.Reset(); // untraced: records nothing
        request.SetReadWrite(BlockOperation.Read, 0, buffer.Pointer, 4096);
        queue.Submit(request);
        while (request.IsInFlight)
        {
            queue.Poll(1);
        }

        request.EndTrace();
        var delta = RequestStages.Snapshot().Since(before);
        Assert.Equal(10, delta.Requests(IoClass.Background));
        Assert.Equal(10, delta[IoClass.Background, RequestStage.Device].Count);
        Assert.Equal(10, delta[IoClass.Background, RequestStage.FrontEnd].Count);
        Assert.Equal(10, delta[IoClass.Background, RequestStage.Completion].Count);
        Assert.Equal(0, delta[IoClass.Background, RequestStage.Scheduler].Count);
        Assert.Equal(0, delta[IoClass.Background, RequestStage.Replication].Count);
        Assert.True(delta[IoClass.Background, RequestStage.Device].MeanMicroseconds > 0);
        Assert.Contains(delta.Format(), line => line.Contains("Device", StringComparison.Ordinal));
    }

    [Fact]
    public void AStageMarkedWithAClockReadForABatchNeverCountsBackwards()
    {
        using var request = new BlockRequest { Class = IoClass.Background };
        var before = RequestStages.Snapshot();
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        request.StartTrace(start);
        request.MarkStage(RequestStage.FrontEnd, start + 1000);
        request.MarkStage(RequestStage.Device, start + 500); // a batch clock read before this request's last mark
        request.EndTrace(start + 3000);
        var delta = RequestStages.Snapshot().Since(before);
        Assert.Equal(1, delta[IoClass.Background, RequestStage.FrontEnd].Count);
        Assert.Equal(0, delta[IoClass.Background, RequestStage.Device].Count); // zero time: not counted, not negative
        Assert.Equal(1, delta[IoClass.Background, RequestStage.Completion].Count);
    }

    [Theory]
    [InlineData(0L)]
    [InlineData(1L)]
    [InlineData(7L)]
    [InlineData(8L)]
    [InlineData(9L)]
    [InlineData(1000L)]
    [InlineData(65_535L)]
    [InlineData(1L << 31)]
    [InlineData((1L << 32) + 1)]
    [InlineData(1L << 40)]
    public void AHistogramBucketHoldsItsValueWithinAnEighth(long ns)
    {
        int bucket = RequestStages.Bucket(ns);
        long top = RequestStages.BucketTop(bucket);
        Assert.InRange(top, ns, Math.Max(ns + 1, ns + (ns / 8) + 1));
        Assert.True(bucket == 0 || RequestStages.BucketTop(bucket - 1) < ns + 1, $"bucket {bucket} of {ns}: the one below already holds it");
    }
}
