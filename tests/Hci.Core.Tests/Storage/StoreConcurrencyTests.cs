using Hci.Core.Blocks;
using Hci.Core.Buffers;
using Hci.Core.Devices;
using Hci.Core.Replication;
using Hci.Core.Storage;
using Xunit.Abstractions;

namespace Hci.Core.Tests.Storage;

public sealed unsafe class StoreConcurrencyTests(ITestOutputHelper output)
{
    private const int Block = StoreHarness.Block;

    [Fact]
    public void QueuesOnTwoThreadsWritingIntoOneChecksumPageLoseNoUpdate()
    {
        using var device = new MemoryBlockDevice(16L << 20);
        using (var store = StoreHarness.Format(device, extentSize: 4L << 20))
        {
            // Extent 0 of volume 1: one checksum page for its 1024 blocks. Thread t writes the blocks b with b % 2 == t.
            var threads = Enumerable.Range(0, 2).Select(t => new Thread(() => WriteHalf(store, t))).ToArray();
            foreach (var th in threads)
            {
                th.Start();
            }

            foreach (var th in threads)
            {
                th.Join();
            }
        }

        using (var store = StoreHarness.Open(device))
        using (var h = new StoreHarness(store))
        {
            for (int b = 0; b < 1024; b += 256)
            {
                Assert.Equal(ReplicaStatus.Ok, h.Read(1, 0, (long)b * Block, 256 * Block));
                for (int i = 0; i < 256; i++)
                {
                    long at = (long)(b + i) * Block;
                    Assert.Equal(b + i + 1, Pattern.IdOf(h.Buffer.Span.Slice(i * Block, Block), 1, 0, at));
                }
            }

            Assert.Equal(0, store.Stats.ChecksumMismatches);
            Assert.Equal(0, store.Stats.TornBlocksReconciled);
        }
    }

    private static void WriteHalf(ReplicaStore store, int half)
    {
        using var queue = store.CreateQueue();
        var recorder = new Counter();
        var requests = new List<(ReplicaRequest R, AlignedBuffer B)>();
        for (int b = half; b < 1024; b += 2)
        {
            var buffer = new AlignedBuffer(Block);
            var r = new ReplicaRequest(1) { Handler = recorder, Operation = ReplicaOperation.Write, VolumeId = 1, Extent = 0, Offset = (long)b * Block, Epoch = 1, Flags = BlockRequestFlags.ForceUnitAccess };
            Pattern.Fill(buffer.Span, 1, 0, r.Offset, b + 1);
            r.AddSegment(buffer.Pointer, Block);
            requests.Add((r, buffer));
        }

        // Up to 32 in flight at once.
        int next = 0;
        while (recorder.Done < requests.Count)
        {
            while (next < requests.Count && next - recorder.Done < 32)
            {
                queue.Submit(requests[next++].R);
            }

            queue.Poll();
        }

        Assert.Equal(0, recorder.Failed);
        foreach (var (r, b) in requests)
        {
            r.Dispose();
            ((IDisposable)b).Dispose();
        }
    }

    [Fact]
    public void SteadyStateReadsAndWritesAllocateNothing()
    {
        using var device = new MemoryBlockDevice(64L << 20);
        using var store = StoreHarness.Format(device, extentSize: 4L << 20);
        using var queue = store.CreateQueue();
        var counter = new Counter();
        const int depth = 16;
        var requests = new ReplicaRequest[depth];
        var buffers = new AlignedBuffer[depth];
        var checksums = new uint*[depth];
        for (int i = 0; i < depth; i++)
        {
            buffers[i] = new AlignedBuffer(Block);
            requests[i] = new ReplicaRequest(1) { Handler = counter };
            checksums[i] = (uint*)System.Runtime.InteropServices.NativeMemory.Alloc(4);
        }

        void RunIos(int count)
        {
            int submitted = 0;
            int target = counter.Done + count;
            for (int i = 0; i < depth; i++)
            {
                Submit(i, submitted++);
            }

            while (counter.Done < target)
            {
                int before = counter.Done;
                queue.Poll();
                for (int k = before; k < counter.Done && submitted < count; k++)
                {
                    Submit(counter.LastIndexes[k % depth], submitted++);
                }
            }
        }

        void Submit(int i, int n)
        {
            var r = requests[i];
            r.Reset();
            r.Operation = n % 2 == 0 ? ReplicaOperation.Write : ReplicaOperation.Read;
            r.VolumeId = 1;
            r.Extent = n % 8;
            r.Offset = (long)(n * 7 % 1024) * Block;
            r.Epoch = 1;
            r.UserTag = i;
            r.Checksums = checksums[i];
            r.AddSegment(buffers[i].Pointer, Block);
            if (r.Operation == ReplicaOperation.Write)
            {
                *checksums[i] = Crc32C.Compute(buffers[i].Span);
            }

            queue.Submit(r);
        }

        RunIos(4000); // warm-up: extents allocated, pools filled
        long before = GC.GetAllocatedBytesForCurrentThread();
        RunIos(10_000);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        output.WriteLine($"{allocated} bytes allocated over 10,000 replica I/Os ({allocated / 10_000.0:0.###} bytes per I/O)");
        Assert.Equal(0, counter.Failed);
        Assert.True(allocated == 0, $"{allocated} bytes allocated over 10,000 I/Os");
        for (int i = 0; i < depth; i++)
        {
            requests[i].Dispose();
            ((IDisposable)buffers[i]).Dispose();
            System.Runtime.InteropServices.NativeMemory.Free(checksums[i]);
        }
    }

    private sealed class Counter : IReplicaCompletionHandler
    {
        public int Done;
        public int Failed;
        public readonly int[] LastIndexes = new int[16];

        public void OnReplicaCompleted(ReplicaRequest request)
        {
            if (request.Status != ReplicaStatus.Ok)
            {
                Failed++;
            }

            LastIndexes[Done % 16] = (int)request.UserTag;
            Done++;
        }
    }
}
