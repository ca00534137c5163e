using System.Diagnostics;
using System.Diagnostics.Metrics;
using Hci.Core.Blocks;
using Hci.Core.Buffers;
using Hci.Core.Modules;
using Hci.Core.Native;
using Hci.Core.Reactors;
using Microsoft.Extensions.Time.Testing;
using Tmds.Linux;

namespace Hci.Core.Tests.Reactors;

/// <summary>
/// The reactor every front-end runs on: messages, pollers, descriptor watches, queues, timers, the sleep policy and
/// the allocation meter, on real eventfds, epoll and io_uring; and a manual reactor stepped by a test.
/// </summary>
public sealed class ReactorTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(20);

    private static void WaitUntil(Func<bool> condition, string what)
    {
        var clock = Stopwatch.StartNew();
        while (!condition())
        {
            Assert.True(clock.Elapsed < Deadline, $"timed out waiting until {what}");
            Thread.Yield();
        }
    }

    private sealed class CountingPoller(int busyTurns) : IPoller
    {
        public int Polls;
        public int Preparations;
        public int BusyLeft = busyTurns;
        public int Thread;

        public PollStatus Poll()
        {
            Polls++;
            Thread = Environment.CurrentManagedThreadId;
            if (BusyLeft > 0)
            {
                BusyLeft--;
                return PollStatus.Busy;
            }

            return PollStatus.Idle;
        }

        public PollStatus PrepareToSleep(ref int maxSleepMilliseconds)
        {
            Preparations++;
            return PollStatus.Idle;
        }
    }

    private sealed unsafe class EventFdWatcher(int fd) : IFdWatcher
    {
        public int Ready;
        public FdEvents Last;

        public void OnReady(FdEvents events)
        {
            ulong value;
            LibC.read(fd, &value, sizeof(ulong));
            Last = events;
            Interlocked.Increment(ref Ready);
        }
    }

    private sealed class Completions : IBlockCompletionHandler
    {
        public int Count;
        public int Thread;
        public int Result;

        public void OnCompleted(BlockRequest request)
        {
            Thread = Environment.CurrentManagedThreadId;
            Result = request.Result;
            Interlocked.Increment(ref Count);
        }
    }

    private static unsafe BlockRequest Read(AlignedBuffer buffer, IBlockCompletionHandler handler)
    {
        var request = new BlockRequest { Handler = handler };
        request.SetReadWrite(BlockOperation.Read, 0, buffer.Pointer, 4096);
        return request;
    }

    private static FileDescriptorHandle EventFd()
    {
        int fd = LibC.eventfd(0, LibC.EFD_CLOEXEC | LibC.EFD_NONBLOCK);
        Assert.True(fd >= 0, "eventfd failed");
        return new FileDescriptorHandle(fd);
    }

    private static unsafe void Signal(FileDescriptorHandle fd)
    {
        ulong one = 1;
        Assert.Equal(sizeof(ulong), (int)LibC.write(fd.Fd, &one, sizeof(ulong)));
    }

    [Fact]
    public async Task APostedMessageRunsOnTheReactorsOwnThreadAndAnInvokesResultOrExceptionComesBack()
    {
        using var reactor = new Reactor(new ReactorOptions { Name = "hci-test-reactor" });
        int thread = await reactor.InvokeAsync(() => Environment.CurrentManagedThreadId);
        Assert.NotEqual(Environment.CurrentManagedThreadId, thread);
        Assert.Equal("hci-test-reactor", await reactor.InvokeAsync(() => Thread.CurrentThread.Name));
        Assert.True(await reactor.InvokeAsync(() => reactor.IsCurrent));
        Assert.False(reactor.IsCurrent);

        var failure = await Assert.ThrowsAsync<InvalidOperationException>(() => reactor.InvokeAsync(() => throw new InvalidOperationException("inside")));
        Assert.Equal("inside", failure.Message);

        // The reactor is still serving after a failed invoke.
        var ran = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        reactor.Post(() => ran.SetResult(Environment.CurrentManagedThreadId));
        Assert.Equal(thread, await ran.Task.WaitAsync(Deadline));
    }

    [Fact]
    public async Task TheReactorsThreadDoesNotCarryItsCreatorsExecutionContext()
    {
        var local = new AsyncLocal<string> { Value = "creator" };
        using var reactor = new Reactor();
        Assert.Null(await reactor.InvokeAsync(() => local.Value is null ? null : local.Value));
    }

    [Fact]
    public async Task RegisteringFromAnotherThreadIsRefusedWithWhatToDoInstead()
    {
        using var reactor = new Reactor();
        var poller = new CountingPoller(0);
        var refused = Assert.Throws<InvalidOperationException>(() => reactor.AddPoller(poller));
        Assert.Contains("Post or InvokeAsync", refused.Message);
        using var device = new Hci.Core.Devices.MemoryBlockDevice(1 << 20);
        Assert.Throws<InvalidOperationException>(() => reactor.OpenQueue(device, 4));
        var registration = await reactor.InvokeAsync(() => reactor.AddPoller(poller));
        WaitUntil(() => Volatile.Read(ref poller.Polls) > 0, "the poller is polled");
        Assert.Throws<InvalidOperationException>(registration.Dispose);
        await reactor.InvokeAsync(registration.Dispose);
        int polls = await reactor.InvokeAsync(() => poller.Polls);
        await reactor.InvokeAsync(() => { });
        Assert.Equal(polls, Volatile.Read(ref poller.Polls));
    }

    [Fact]
    public async Task ABusyPollerIsTurnedAtOnceAndAnIdleReactorPreparesItsPollersThenSleeps()
    {
        using var reactor = new Reactor(new ReactorOptions { PollWindow = TimeSpan.FromMicroseconds(50) });
        var poller = new CountingPoller(1000);
        await reactor.InvokeAsync(() => reactor.AddPoller(poller));
        WaitUntil(() => Volatile.Read(ref poller.BusyLeft) == 0, "the busy turns are done");
        WaitUntil(() => Volatile.Read(ref poller.Preparations) > 0 && reactor.Sleeps > 0, "the reactor prepares and sleeps");

        // Asleep, it does not spin: turns stop growing until something wakes it.
        long sleeps = reactor.Sleeps;
        long turns = reactor.Turns;
        WaitUntil(() => reactor.Turns == turns || reactor.Sleeps > sleeps, "the reactor settles");
        long settled = reactor.Turns;
        Assert.True(await reactor.InvokeAsync(() => true));
        Assert.True(reactor.Turns > settled, "a post wakes it for a turn");
        Assert.Equal(reactor.ThreadId, poller.Thread);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AWatchedEventFdWakesASleepingReactorAndIsReportedReadable(bool pollWhileBusy)
    {
        using var reactor = new Reactor(new ReactorOptions { PollWindow = TimeSpan.Zero });
        using var fd = EventFd();
        var watcher = new EventFdWatcher(fd.Fd);
        var watch = await reactor.InvokeAsync(() => reactor.Watch(fd, FdEvents.Readable, watcher, pollWhileBusy));
        WaitUntil(() => reactor.Sleeps > 0, "the reactor sleeps");
        for (int i = 1; i <= 3; i++)
        {
            Signal(fd);
            WaitUntil(() => Volatile.Read(ref watcher.Ready) >= i, $"signal {i} is seen");
        }

        Assert.Equal(FdEvents.Readable, watcher.Last & FdEvents.Readable);
        await reactor.InvokeAsync(watch.Dispose);
        Signal(fd);
        Assert.True(await reactor.InvokeAsync(() => true));
        Assert.Equal(3, Volatile.Read(ref watcher.Ready));
    }

    [Fact]
    public async Task AQueueOpenedOnTheReactorCompletesOnItsThreadAndTheReactorSleepsOnIt()
    {
        await using var t = CoreDevices.IoUring();
        using var reactor = new Reactor(new ReactorOptions { PollWindow = TimeSpan.Zero });
        using var buffer = new AlignedBuffer(4096);
        var handler = new Completions();
        var request = Read(buffer, handler);
        var queue = await reactor.InvokeAsync(() => reactor.OpenQueue(t.Device, 8));
        for (int i = 1; i <= 50; i++)
        {
            await reactor.InvokeAsync(() => queue.Submit(request));
            WaitUntil(() => Volatile.Read(ref handler.Count) == i, $"read {i} completes");
        }

        Assert.Equal(4096, handler.Result);
        Assert.Equal(reactor.ThreadId, handler.Thread);
        Assert.True(reactor.Sleeps > 0);
        await reactor.InvokeAsync(() => reactor.ReleaseQueue(queue));
    }

    [Fact]
    public async Task TheSharedQueueOfADeviceIsOneQueueUntilItsLastUserGivesItBack()
    {
        using var device = new Hci.Core.Devices.MemoryBlockDevice(1 << 20);
        using var other = new Hci.Core.Devices.MemoryBlockDevice(1 << 20);
        using var reactor = new Reactor();
        var (a, b, c) = await reactor.InvokeAsync(() => (reactor.AcquireQueue(device, 8), reactor.AcquireQueue(device, 8), reactor.AcquireQueue(other, 8)));
        Assert.Same(a, b);
        Assert.NotSame(a, c);
        var own = await reactor.InvokeAsync(() => reactor.OpenQueue(device, 8));
        Assert.NotSame(a, own);

        await reactor.InvokeAsync(() => reactor.ReleaseQueue(a));
        var again = await reactor.InvokeAsync(() => reactor.AcquireQueue(device, 8));
        Assert.Same(a, again); // one user still held it
        await reactor.InvokeAsync(() => reactor.ReleaseQueue(a));
        await reactor.InvokeAsync(() => reactor.ReleaseQueue(a));
        var fresh = await reactor.InvokeAsync(() => reactor.AcquireQueue(device, 8));
        Assert.NotSame(a, fresh);
        await Assert.ThrowsAsync<InvalidOperationException>(() => reactor.InvokeAsync(() => reactor.ReleaseQueue(a)));
    }

    [Fact]
    public void AManualReactorRunsOnlyWhenTurnedAndItsTimersOnlyWhenTheFakeClockSaysSo()
    {
        var time = new FakeTimeProvider();
        using var reactor = Reactor.CreateManual(new ReactorOptions { TimeProvider = time });
        int fired = 0;
        var timer = reactor.CreateTimer(() => fired++);
        timer.Schedule(TimeSpan.FromSeconds(5));
        Assert.True(timer.IsScheduled);
        bool ran = false;
        reactor.Post(() => ran = true);
        Assert.False(ran);
        Assert.True(reactor.RunOnce());
        Assert.True(ran);
        Assert.False(reactor.RunOnce());

        time.Advance(TimeSpan.FromSeconds(4.9));
        reactor.RunOnce();
        Assert.Equal(0, fired);
        time.Advance(TimeSpan.FromSeconds(0.2));
        Assert.True(reactor.RunOnce());
        Assert.Equal(1, fired);
        Assert.False(timer.IsScheduled);

        // Cancelled, it never fires; scheduled again, it fires once more.
        timer.Schedule(TimeSpan.FromSeconds(1));
        timer.Cancel();
        time.Advance(TimeSpan.FromSeconds(2));
        reactor.RunOnce();
        Assert.Equal(1, fired);
        timer.Schedule(TimeSpan.Zero);
        reactor.RunOnce();
        Assert.Equal(2, fired);

        // Another thread may only post to it.
        Exception? error = null;
        var other = new Thread(() => error = Record.Exception(() => reactor.AddPoller(new CountingPoller(0))));
        other.Start();
        other.Join();
        Assert.IsType<InvalidOperationException>(error);
        Assert.Throws<InvalidOperationException>(() => new Reactor().RunOnce());
    }

    [Fact]
    public void AManualReactorSeesAKickOnlyWhenTurned()
    {
        using var reactor = Reactor.CreateManual();
        using var fd = EventFd();
        var watcher = new EventFdWatcher(fd.Fd);
        using var watch = reactor.Watch(fd, FdEvents.Readable, watcher, pollWhileBusy: false);
        Signal(fd);
        Assert.Equal(0, watcher.Ready);
        Assert.True(reactor.RunOnce());
        Assert.Equal(1, watcher.Ready);
        Assert.False(reactor.RunOnce());
    }

    [Fact]
    public async Task AfterStoppingPostsAreRefusedAndInvokesFailInsteadOfHanging()
    {
        var reactor = new Reactor();
        await reactor.StopAsync().WaitAsync(Deadline);
        Assert.True(reactor.IsStopped);
        Assert.Throws<ObjectDisposedException>(() => reactor.Post(() => { }));
        await Assert.ThrowsAsync<ObjectDisposedException>(() => reactor.InvokeAsync(() => 1));
        reactor.Dispose();
    }

    [Fact]
    public async Task StoppingWaitsForTheIoInFlightOnItsQueues()
    {
        using var inner = new Hci.Core.Devices.MemoryBlockDevice(1 << 20);
        using var slow = new Hci.Core.Devices.Decorators.DelayBlockDevice(inner, TimeSpan.FromSeconds(1), TimeSpan.Zero, ownsInner: false);
        var reactor = new Reactor();
        using var buffer = new AlignedBuffer(4096);
        var handler = new Completions();
        var request = Read(buffer, handler);
        await reactor.InvokeAsync(() => reactor.OpenQueue(slow, 4).Submit(request));
        var stopped = reactor.StopAsync();
        Assert.False(stopped.IsCompleted);
        Assert.Equal(0, Volatile.Read(ref handler.Count));
        await stopped.WaitAsync(Deadline);
        Assert.Equal(1, Volatile.Read(ref handler.Count));
        Assert.Equal(4096, handler.Result);
    }

    [Fact]
    public async Task ADeviceThatNeverAnswersDoesNotHangTheStopPastItsTimeoutAndItsQueueIsLeftOpen()
    {
        using var inner = new Hci.Core.Devices.MemoryBlockDevice(1 << 20);
        using var stuck = new Hci.Core.Devices.Decorators.DelayBlockDevice(inner, TimeSpan.FromHours(1), TimeSpan.Zero, new FakeTimeProvider(), ownsInner: false);
        var reactor = new Reactor(new ReactorOptions { StopTimeout = TimeSpan.FromMilliseconds(300) });
        using var buffer = new AlignedBuffer(4096);
        var handler = new Completions();
        var request = Read(buffer, handler);
        await reactor.InvokeAsync(() => reactor.OpenQueue(stuck, 4).Submit(request));
        await reactor.StopAsync().WaitAsync(Deadline);
        Assert.Equal(1, reactor.AbandonedQueues);
        Assert.Equal(0, Volatile.Read(ref handler.Count));
    }

    [Fact]
    public async Task AGroupPlacesEachNewAssignmentOnTheLeastLoadedReactor()
    {
        using var group = new ReactorGroup(new ReactorGroupOptions { Count = 3, Name = "hci-test-group" });
        Assert.Equal(["hci-test-group-0", "hci-test-group-1", "hci-test-group-2"], group.Reactors.Select(r => r.Name));
        var assignments = Enumerable.Range(0, 9).Select(_ => group.Assign()).ToList();
        Assert.All(group.Reactors, r => Assert.Equal(3, r.Load));
        var first = assignments[0].Reactor;
        foreach (var a in assignments.Where(a => a.Reactor == first))
        {
            a.Dispose();
            a.Dispose(); // once only
        }

        Assert.Equal(0, first.Load);
        Assert.Same(first, group.Assign().Reactor);
        var threads = await Task.WhenAll(group.Reactors.Select(r => r.InvokeAsync(() => Environment.CurrentManagedThreadId)));
        Assert.Equal(3, threads.Distinct().Count());
        Assert.Throws<ArgumentException>(() => new ReactorGroup(new ReactorGroupOptions { Count = 0 }));
    }

    [Fact]
    public async Task TheAllocationMeterReadsNothingForATurningReactorWhosePollersDoNotAllocate()
    {
        using var reactor = new Reactor(new ReactorOptions { Name = "hci-test-meter" });
        var poller = new CountingPoller(200_000);
        await reactor.InvokeAsync(() => reactor.AddPoller(poller));
        WaitUntil(() => Volatile.Read(ref poller.BusyLeft) < 150_000, "the reactor is turning");
        long before = reactor.AllocatedBytes;
        WaitUntil(() => Volatile.Read(ref poller.BusyLeft) == 0, "100k more busy turns");
        Assert.Equal(before, reactor.AllocatedBytes);

        // The same figure through the meter.
        long measured = -1;
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == ReactorMetrics.MeterName && instrument.Name == "hci.reactor.allocated_bytes")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
        {
            foreach (var tag in tags)
            {
                if (tag.Key == "reactor" && (string?)tag.Value == "hci-test-meter")
                {
                    measured = value;
                }
            }
        });
        ReactorMetrics.EnsureCreated();
        listener.Start();
        listener.RecordObservableInstruments();
        Assert.Equal(reactor.AllocatedBytes, measured);
    }

    [Fact]
    public void OptionsOutOfRangeAreRefusedWithWhatToChange()
    {
        Assert.Contains("PollWindow", Assert.Throws<ArgumentException>(() => new Reactor(new ReactorOptions { PollWindow = TimeSpan.FromSeconds(2) })).Message);
        Assert.Contains("Name", Assert.Throws<ArgumentException>(() => new Reactor(new ReactorOptions { Name = " " })).Message);
    }
}
