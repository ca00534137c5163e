using System.Buffers.Binary;
using System.Diagnostics;
using Hci.Core.Blocks;
using Hci.Core.Devices;
using Hci.Scheduling;
using Hci.Transport.Virtio;

namespace Hci.Transport.Tests;

/// <summary>
/// The processor asks the block queue below whether its tenant is throttled: over a real scheduler with a
/// per-tenant limit, a guest past its limit has its requests left in its own ring with kicks off, and they are
/// taken once the limit allows again.
/// </summary>
public sealed unsafe class EdgeThrottleTests
{
    [Fact]
    public void ATenantPastItsSchedulerLimitIsHeldInItsOwnRingUntilTheLimitAllows()
    {
        using var g = new GuestRing(size: 64);
        var options = new SchedulerOptions { Kind = SchedulerKind.Limits };
        options.Limits.Tenants[3] = new TenantLimits { Iops = 4, IopsBurst = 1 }; // a token every 250 ms: the throttle outlasts any scheduling hiccup here
        using var device = new ScheduledBlockDevice(new MemoryBlockDevice(1 << 20, logicalBlockSize: 512), options);
        using var queue = device.CreateQueue(64);
        using var blk = new VirtioBlkQueueProcessor(g.Queue, queue, "edge", tenant: 3, signal: null);

        void Make(ushort i)
        {
            ulong header = 0x30000 + (i * 0x100UL), status = 0x38000 + (i * 0x100UL), data = 0x40000 + (i * 0x1000UL);
            BinaryPrimitives.WriteUInt32LittleEndian(new Span<byte>(g.Host + header, 4), VirtioBlk.TypeIn);
            BinaryPrimitives.WriteUInt64LittleEndian(new Span<byte>(g.Host + header + 8, 8), i);
            g.SetDescriptor(i * 4, GuestRing.Base + header, 16, 1, (ushort)((i * 4) + 1));
            g.SetDescriptor((i * 4) + 1, GuestRing.Base + data, 512, 3, (ushort)((i * 4) + 2));
            g.SetDescriptor((i * 4) + 2, GuestRing.Base + status, 1, 2, 0);
            g.MakeAvailable((ushort)(i * 4));
        }

        // Two requests: the first is dispatched, the second waits in the scheduler and the tenant is now throttled.
        Make(0);
        Make(1);
        Assert.Equal(2, blk.Process());
        queue.Poll(0, 0);
        Assert.True(queue.IsThrottled(3));

        // While throttled, new requests stay in the guest's ring and kicks are off.
        for (ushort i = 2; i < 6; i++)
        {
            Make(i);
        }

        Assert.Equal(0, blk.Process());
        Assert.True(blk.Throttled);
        Assert.Equal(4, g.Queue.Pending());
        Assert.Equal(1, *(ushort*)(g.Host + GuestRing.UsedOffset)); // VRING_USED_F_NO_NOTIFY

        // Once the limit allows, what accumulated is taken as one batch.
        var watch = Stopwatch.StartNew();
        int taken = 0;
        while (taken == 0)
        {
            Assert.True(watch.Elapsed < TimeSpan.FromSeconds(10), "the throttle never lifted");
            queue.Poll(0, 1);
            taken = blk.Process();
        }

        Assert.Equal(4, taken);
        Assert.Equal(0, g.Queue.Pending());
        while (queue.InFlight > 0)
        {
            queue.Poll(1, 100);
        }

        Assert.Equal(6, g.UsedIdx);
    }
}
