using Hci.Core.Buffers;
using Hci.Transport.Iscsi;

namespace Hci.Transport.Tests;

/// <summary>An iSCSI task is a slot of the Core pool: it keeps its buffer from command to command and forgets the rest.</summary>
public sealed class IscsiTaskTests
{
    [Fact]
    public void ATaskGivenBackKeepsItsBufferButForgetsItsCommand()
    {
        using var pool = new IoSlotPool<IscsiTask>(static () => new IscsiTask(), maxSlots: 2, maxBufferedBytes: 1 << 20);
        var t = pool.Take(8192)!;
        var buffer = t.Buffer;
        t.State = IscsiTaskState.Running;
        t.Task.Buffer = t.Buffer;
        t.Abort = new IscsiTaskManagementWait(7);
        pool.Return(t);

        Assert.Equal(IscsiTaskState.Idle, t.State);
        Assert.Null(t.Task.Buffer);
        Assert.Null(t.Abort);
        Assert.Null(t.Path);
        var again = pool.Take(4096);
        Assert.Same(t, again);
        Assert.Same(buffer, again!.Buffer);
    }
}
