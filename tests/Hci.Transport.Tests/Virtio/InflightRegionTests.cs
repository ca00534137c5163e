using System.Runtime.InteropServices;
using Hci.Transport.Virtio;

namespace Hci.Transport.Tests;

/// <summary>
/// The in-flight record a restarted back-end resumes from: requests completed out of order, a head fetched again
/// after it completed, and a completion interrupted between publishing it and clearing its flag.
/// </summary>
public sealed unsafe class InflightRegionTests : IDisposable
{
    private const int Size = 16;
    private readonly nint _memory = (nint)NativeMemory.AllocZeroed((nuint)InflightRegion.QueueRegionSize(Size));

    public void Dispose() => NativeMemory.Free((void*)_memory);

    private static ushort[] Recover(InflightRegion region, ushort usedIndex)
    {
        var heads = new ushort[Size];
        int n = region.Recover(usedIndex, heads);
        return heads[..n];
    }

    [Fact]
    public void OutOfOrderCompletionsLeaveExactlyTheUnansweredHeadsInFetchOrder()
    {
        var region = new InflightRegion(_memory, Size);
        foreach (ushort head in new ushort[] { 5, 2, 9, 7, 12 })
        {
            region.Fetched(head);
        }

        // Completed out of order: 9, then 2, then 12.
        ushort used = 0;
        foreach (ushort head in new ushort[] { 9, 2, 12 })
        {
            region.BeforePut(head);
            region.AfterPut(head, ++used);
        }

        // A new back-end attaches to the same memory (the front-end kept it) and finds 5 and 7, oldest first.
        var restarted = new InflightRegion(_memory, Size);
        Assert.Equal(new ushort[] { 5, 7 }, Recover(restarted, used));
    }

    [Fact]
    public void AHeadFetchedAgainAfterItCompletedSortsByItsLatestFetch()
    {
        var region = new InflightRegion(_memory, Size);
        region.Fetched(1);
        region.Fetched(2);
        region.BeforePut(1);
        region.AfterPut(1, 1);
        region.Fetched(3);
        region.Fetched(1); // the guest reused head 1 for a new request
        Assert.Equal(new ushort[] { 2, 3, 1 }, Recover(new InflightRegion(_memory, Size), 1));
    }

    [Fact]
    public void ACompletionInterruptedAfterPublishingIsCountedDoneNotRunAgain()
    {
        var region = new InflightRegion(_memory, Size);
        region.Fetched(4);
        region.Fetched(6);
        region.Fetched(8);
        region.BeforePut(8);
        region.AfterPut(8, 1);

        // Head 6: noted as the last batch and published on the used ring (used index 2), then the back-end died
        // before clearing its flag and copying the used index.
        region.BeforePut(6);
        var restarted = new InflightRegion(_memory, Size);
        Assert.Equal(new ushort[] { 4 }, Recover(restarted, 2));

        // Not published (the ring's used index is still 1): 6 was not answered and must run again.
        Dispose2();
        region = new InflightRegion(_memory, Size);
        region.Fetched(4);
        region.Fetched(6);
        region.Fetched(8);
        region.BeforePut(8);
        region.AfterPut(8, 1);
        region.BeforePut(6);
        Assert.Equal(new ushort[] { 4, 6 }, Recover(new InflightRegion(_memory, Size), 1));
    }

    [Fact]
    public void AHostileRecordNamesNoHeadOutsideTheQueue()
    {
        var region = new InflightRegion(_memory, Size);
        region.Fetched(3);

        // The front-end owns this memory: a last-batch head past the queue and flags that are not 0 or 1.
        *(ushort*)(_memory + 12) = 0xFFFF; // last_batch_head
        *(ushort*)(_memory + 14) = 0x1234; // used_idx, not the ring's
        ((byte*)(_memory + InflightRegion.HeaderSize))[5 * InflightRegion.DescriptorSize] = 7;
        var heads = Recover(new InflightRegion(_memory, Size), 0);
        Assert.Equal(new ushort[] { 3 }, heads);
    }

    private void Dispose2() => new Span<byte>((void*)_memory, (int)InflightRegion.QueueRegionSize(Size)).Clear();
}
