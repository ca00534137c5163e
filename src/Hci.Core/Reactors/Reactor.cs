using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.InteropServices;
using Hci.Core.Blocks;
using Hci.Core.Modules;
using Hci.Core.Native;
using Tmds.Linux;

namespace Hci.Core.Reactors;

/// <summary>
/// One thread that runs a set of pollers, descriptor watches, block queues, timers and posted messages, and the
/// poll-then-sleep policy that decides when it may sleep: the data path's event loop, shared by every front-end
/// (SPDK's thread and poller, QEMU's AioContext).
/// </summary>
/// <remarks>
/// <para><b>A turn</b> runs the posted messages, every <see cref="IPoller"/>, the ready descriptors (one
/// <c>epoll_wait(0)</c> for all watches made with <c>pollWhileBusy</c>), every queue with I/O in flight
/// (<see cref="BlockQueue.Poll"/>: batched submissions go out, completions reach their handlers), and the due timers.
/// A turn that did anything is followed by the next at once.</para>
/// <para><b>Sleep.</b> After <see cref="ReactorOptions.PollWindow"/> without work, every poller is asked to
/// <see cref="IPoller.PrepareToSleep"/> (kicks back on, one more look) and the reactor sleeps until a watched
/// descriptor is ready, a queue completes, a message is posted, or the next timer is due. With I/O in flight on one
/// queue it sleeps in that queue's wait, which also ends when the reactor's epoll set is ready
/// (<see cref="BlockQueue.TrySetWakeSource"/>): no other thread stands between a completion or a kick and the
/// reactor. With I/O in flight on several queues the sleep is cut to 1 ms.</para>
/// <para><b>Threads.</b> Everything registered runs on the reactor's thread. From other threads only
/// <see cref="Post(IReactorMessage)"/>, <see cref="Post(Action)"/>, <see cref="InvokeAsync(Action)"/>,
/// <see cref="Wake"/> and <see cref="StopAsync"/> may be called; the rest throws <see cref="InvalidOperationException"/>
/// there. The thread does not carry its creator's execution context, and an exception that escapes a poller, watcher,
/// timer or message ends the process with <see cref="Environment.FailFast(string)"/>: a loop that swallowed it would
/// leave requests hanging with nobody to answer them.</para>
/// </remarks>
public sealed unsafe class Reactor : IDisposable
{
    private const int MaxEvents = 64;
    private const ulong WakeToken = 0;

    private static readonly ConcurrentDictionary<Reactor, byte> s_live = new();

    private readonly string _name;
    private readonly TimeProvider _time;
    private readonly long _pollTicks;
    private readonly long _stopTicks;
    private long _stopDeadline;
    private readonly bool _manual;
    private readonly FileDescriptorHandle _epoll;
    private readonly FileDescriptorHandle _wakeFd;
    private readonly ConcurrentQueue<IReactorMessage> _inbox = new();
    private readonly List<IPoller> _pollers = [];
    private readonly List<QueueEntry> _queues = [];
    private readonly List<ReactorTimer> _timers = [];
    private readonly Stack<int> _freeWatchIds = new();
    private readonly TaskCompletionSource _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Thread? _thread;
    private FdWatch?[] _watches = new FdWatch?[16];
    private int _watchCount;
    private int _busyWatchCount;
    private int _ownerThreadId;
    private long _nextDue = long.MaxValue;
    private long _lastWork;
    private int _sleeping;
    private BlockQueue? _sleepingIn;
    private volatile bool _stopping;
    private volatile bool _closed;
    private int _assigned;
    private long _allocationBase;
    private long _allocated;
    private long _turns;
    private long _sleeps;

    /// <summary>Starts a reactor on a thread of its own.</summary>
    /// <param name="options">Options; null for the defaults.</param>
    /// <exception cref="ArgumentException">The options are out of range.</exception>
    /// <exception cref="IOException">The epoll set or the wake eventfd could not be made.</exception>
    public Reactor(ReactorOptions? options = null)
        : this(options, manual: false)
    {
    }

    private Reactor(ReactorOptions? options, bool manual)
    {
        options = options?.Clone() ?? new ReactorOptions();
        options.Validate();
        _name = options.Name;
        _time = options.TimeProvider;
        _pollTicks = (long)(options.PollWindow.TotalSeconds * _time.TimestampFrequency);
        _stopTicks = (long)(options.StopTimeout.TotalSeconds * Stopwatch.Frequency);
        _manual = manual;
        int epoll = LibC.epoll_create1(LibC.EPOLL_CLOEXEC);
        if (epoll < 0)
        {
            throw new IOException($"Reactor '{_name}': epoll_create1 failed: {Errno.Describe(LibC.errno)}.");
        }

        _epoll = new FileDescriptorHandle(epoll);
        int wake = LibC.eventfd(0, LibC.EFD_CLOEXEC | LibC.EFD_NONBLOCK);
        if (wake < 0)
        {
            int errno = LibC.errno;
            _epoll.Dispose();
            throw new IOException($"Reactor '{_name}': eventfd failed: {Errno.Describe(errno)}.");
        }

        _wakeFd = new FileDescriptorHandle(wake);
        epoll_event ev = default;
        ev.events = LibC.EPOLLIN;
        ev.data.u64 = WakeToken;
        if (LibC.epoll_ctl(epoll, LibC.EPOLL_CTL_ADD, wake, &ev) != 0)
        {
            int errno = LibC.errno;
            _wakeFd.Dispose();
            _epoll.Dispose();
            throw new IOException($"Reactor '{_name}': epoll_ctl failed: {Errno.Describe(errno)}.");
        }

        // Token 0 is the wake eventfd's; watches take ids from 1.
        for (int i = _watches.Length - 1; i >= 1; i--)
        {
            _freeWatchIds.Push(i);
        }

        s_live.TryAdd(this, 0);
        ReactorMetrics.EnsureCreated(); // the instruments exist once there is a reactor to measure, whoever listens
        if (!manual)
        {
            using (ExecutionContext.SuppressFlow())
            {
                _thread = new Thread(Run) { IsBackground = true, Name = _name };
                _thread.Start();
            }
        }
    }

    /// <summary>The reactor whose thread is running this code (its loop, or a test turning a manual reactor), or
    /// null: what a queue made on a reactor's thread uses to watch its own descriptors there.</summary>
    public static Reactor? Current => t_current;

    [ThreadStatic]
    private static Reactor? t_current;

    /// <summary>Makes a reactor with no thread, turned by <see cref="RunOnce"/> (deterministic tests).</summary>
    /// <param name="options">Options; null for the defaults. A fake <see cref="ReactorOptions.TimeProvider"/> steps its timers.</param>
    /// <returns>The reactor; the first thread that turns it or registers with it owns it.</returns>
    internal static Reactor CreateManual(ReactorOptions? options = null) => new(options, manual: true);

    /// <summary>The reactor's name (its thread's name).</summary>
    public string Name => _name;

    /// <summary>True on the reactor's own thread (for a manual reactor: on the thread that owns it, or before any does).</summary>
    public bool IsCurrent
    {
        get
        {
            int owner = Volatile.Read(ref _ownerThreadId);
            return owner == Environment.CurrentManagedThreadId || (_manual && owner == 0);
        }
    }

    /// <summary>
    /// How much work is placed here: pollers, descriptors watched on busy turns, queues, and assignments from a
    /// <see cref="ReactorGroup"/>. New work goes to the least loaded reactor of a group.
    /// </summary>
    public int Load => Volatile.Read(ref _assigned) + _pollers.Count + _busyWatchCount + _queues.Count;

    /// <summary>True once the reactor stopped; posts are refused.</summary>
    public bool IsStopped => _closed;

    /// <summary>The reactor's thread's managed id (0 for a manual reactor no thread has turned yet).</summary>
    internal int ThreadId => Volatile.Read(ref _ownerThreadId);

    /// <summary>Bytes allocated on the reactor's thread while it turned (the hot path's allocation meter; also the
    /// <c>hci.reactor.allocated_bytes</c> instrument of <see cref="ReactorMetrics"/>).</summary>
    internal long AllocatedBytes => Volatile.Read(ref _allocated);

    /// <summary>Turns run so far.</summary>
    internal long Turns => Volatile.Read(ref _turns);

    /// <summary>Times the reactor went to sleep.</summary>
    internal long Sleeps => Volatile.Read(ref _sleeps);

    /// <summary>Queues left open when the reactor stopped because their I/O did not complete within <see cref="ReactorOptions.StopTimeout"/>.</summary>
    internal int AbandonedQueues { get; private set; }

    internal static ICollection<Reactor> Live => s_live.Keys;

    // ---- cross-thread ----

    /// <summary>Runs <paramref name="message"/> on the reactor's thread soon; allocates nothing. Safe from any thread.</summary>
    /// <param name="message">The message.</param>
    /// <exception cref="ObjectDisposedException">The reactor has stopped.</exception>
    public void Post(IReactorMessage message)
    {
        ArgumentNullException.ThrowIfNull(message);
        if (_closed)
        {
            throw new ObjectDisposedException(_name, "The reactor has stopped.");
        }

        _inbox.Enqueue(message);
        if (_closed)
        {
            // Raced with the stop: the reactor may have made its last pass over the inbox already.
            AbandonInbox();
            throw new ObjectDisposedException(_name, "The reactor has stopped.");
        }

        Wake();
    }

    /// <summary>Runs <paramref name="action"/> on the reactor's thread soon (control plane: allocates). Safe from any thread.</summary>
    /// <param name="action">The work.</param>
    /// <exception cref="ObjectDisposedException">The reactor has stopped.</exception>
    public void Post(Action action)
    {
        ArgumentNullException.ThrowIfNull(action);
        Post(new ActionMessage(action));
    }

    /// <summary>Runs <paramref name="action"/> on the reactor's thread (at once when called there) and completes when it has run.</summary>
    /// <param name="action">The work; its exception faults the task.</param>
    /// <returns>A task whose continuations run on the thread pool, never on the reactor.</returns>
    public Task InvokeAsync(Action action)
    {
        ArgumentNullException.ThrowIfNull(action);
        return InvokeAsync(() =>
        {
            action();
            return true;
        });
    }

    /// <summary>Runs <paramref name="func"/> on the reactor's thread (at once when called there) and returns its result.</summary>
    /// <typeparam name="T">The result's type.</typeparam>
    /// <param name="func">The work; its exception faults the task.</param>
    /// <returns>A task whose continuations run on the thread pool, never on the reactor.</returns>
    public Task<T> InvokeAsync<T>(Func<T> func)
    {
        ArgumentNullException.ThrowIfNull(func);
        if (IsCurrent && !_closed)
        {
            try
            {
                return Task.FromResult(func());
            }
            catch (Exception e)
            {
                return Task.FromException<T>(e);
            }
        }

        var message = new InvokeMessage<T>(func);
        try
        {
            Post(message);
        }
        catch (ObjectDisposedException e)
        {
            return Task.FromException<T>(e);
        }

        return message.Task;
    }

    /// <summary>Makes a sleeping reactor turn soon; cheap when it is awake. Safe from any thread.</summary>
    public void Wake()
    {
        if (Volatile.Read(ref _sleeping) == 0 || Interlocked.Exchange(ref _sleeping, 0) == 0)
        {
            return;
        }

        // A queue that watches the epoll set wakes with the eventfd; one that cannot is woken on its own.
        Volatile.Read(ref _sleepingIn)?.Wake();
        WriteWake();
    }

    /// <summary>Stops the reactor once the I/O in flight on its queues has completed; then its queues are closed
    /// and messages posted since are abandoned.</summary>
    /// <returns>Completes when the reactor has stopped.</returns>
    public Task StopAsync()
    {
        _stopping = true;
        if (_manual)
        {
            if (!_closed)
            {
                Close();
            }

            return _stopped.Task;
        }

        Interlocked.Exchange(ref _sleeping, 0);
        Volatile.Read(ref _sleepingIn)?.Wake();
        WriteWake();
        return _stopped.Task;
    }

    /// <summary>Stops the reactor and waits for its thread (not when called on the reactor's own thread).</summary>
    public void Dispose()
    {
        var stopped = StopAsync();
        if (!IsCurrent || _manual)
        {
            stopped.GetAwaiter().GetResult();
        }
    }

    // ---- reactor thread ----

    /// <summary>Adds a poller, looked at on every turn. Reactor thread only.</summary>
    /// <param name="poller">The poller.</param>
    /// <returns>Dispose it to remove the poller.</returns>
    public IDisposable AddPoller(IPoller poller)
    {
        ArgumentNullException.ThrowIfNull(poller);
        CheckThread();
        _pollers.Add(poller);
        return new PollerRegistration(this, poller);
    }

    /// <summary>
    /// Watches a descriptor (level-triggered). Reactor thread only.
    /// </summary>
    /// <param name="fd">The descriptor; a reference is held on it while watched.</param>
    /// <param name="events">What to watch for.</param>
    /// <param name="watcher">Told when it is ready.</param>
    /// <param name="pollWhileBusy">True for a socket (looked at on every busy turn, all such descriptors in one
    /// <c>epoll_wait</c>); false for an eventfd that only matters while the reactor sleeps (a virtqueue kick: busy
    /// polling sees the work anyway).</param>
    /// <returns>The watch; dispose it before closing the descriptor.</returns>
    /// <exception cref="IOException">epoll refused the descriptor.</exception>
    public FdWatch Watch(SafeHandle fd, FdEvents events, IFdWatcher watcher, bool pollWhileBusy)
    {
        ArgumentNullException.ThrowIfNull(fd);
        ArgumentNullException.ThrowIfNull(watcher);
        CheckThread();
        ObjectDisposedException.ThrowIf(_closed, this);
        bool added = false;
        fd.DangerousAddRef(ref added);
        try
        {
            int number = (int)fd.DangerousGetHandle();
            if (_freeWatchIds.Count == 0)
            {
                int old = _watches.Length;
                Array.Resize(ref _watches, old * 2);
                for (int i = _watches.Length - 1; i >= old; i--)
                {
                    _freeWatchIds.Push(i);
                }
            }

            int id = _freeWatchIds.Pop();
            uint generation = (uint)Interlocked.Increment(ref s_generation);
            var watch = new FdWatch(this, fd, number, events, watcher, pollWhileBusy, id, generation);
            epoll_event ev = default;
            ev.events = (int)events;
            ev.data.u64 = Token(watch);
            if (LibC.epoll_ctl(_epoll.Fd, LibC.EPOLL_CTL_ADD, number, &ev) != 0)
            {
                int errno = LibC.errno;
                _freeWatchIds.Push(id);
                throw new IOException($"Reactor '{_name}': epoll_ctl(ADD, fd {number}) failed: {Errno.Describe(errno)}.");
            }

            _watches[id] = watch;
            _watchCount++;
            if (pollWhileBusy)
            {
                _busyWatchCount++;
            }

            added = false; // the watch keeps the reference until it is removed
            return watch;
        }
        finally
        {
            if (added)
            {
                fd.DangerousRelease();
            }
        }
    }

    /// <summary>
    /// Opens a queue on <paramref name="device"/> owned by this reactor: polled on every turn while it has I/O in
    /// flight, and slept on. Reactor thread only.
    /// </summary>
    /// <param name="device">The device.</param>
    /// <param name="depth">The queue's depth.</param>
    /// <returns>The queue; give it back with <see cref="ReleaseQueue"/>, never dispose it yourself.</returns>
    public BlockQueue OpenQueue(BlockDevice device, int depth) => Open(device, depth, shared: false);

    /// <summary>
    /// The queue on <paramref name="device"/> that every user of the device on this reactor shares (opened by the
    /// first, reference-counted): many connections on one reactor need one ring, not one each. Reactor thread only.
    /// </summary>
    /// <param name="device">The device.</param>
    /// <param name="depth">The queue's depth when it is opened here; beyond it requests wait in the queue.</param>
    /// <returns>The queue; give it back with <see cref="ReleaseQueue"/>.</returns>
    public BlockQueue AcquireQueue(BlockDevice device, int depth) => Open(device, depth, shared: true);

    /// <summary>Gives back a queue from <see cref="OpenQueue"/> or <see cref="AcquireQueue"/>; it closes once its last
    /// user gave it back and nothing is in flight on it. Reactor thread only.</summary>
    /// <param name="queue">The queue.</param>
    public void ReleaseQueue(BlockQueue queue)
    {
        ArgumentNullException.ThrowIfNull(queue);
        CheckThread();
        foreach (var entry in _queues)
        {
            if (entry.Queue == queue)
            {
                if (entry.Users <= 0)
                {
                    throw new InvalidOperationException("The queue was given back more times than it was taken.");
                }

                entry.Users--;
                CloseIdleQueues();
                return;
            }
        }

        throw new InvalidOperationException("The queue does not belong to this reactor.");
    }

    /// <summary>Makes a timer that fires on this reactor's thread. Reactor thread only for scheduling it.</summary>
    /// <param name="callback">Runs when it fires.</param>
    /// <returns>The timer, not yet scheduled.</returns>
    public ReactorTimer CreateTimer(Action callback)
    {
        ArgumentNullException.ThrowIfNull(callback);
        return new ReactorTimer(this, callback);
    }

    /// <summary>Runs one turn of a manual reactor without sleeping: messages, pollers, every ready descriptor, queues, due timers.</summary>
    /// <returns>True when the turn did anything.</returns>
    /// <exception cref="InvalidOperationException">The reactor has a thread of its own.</exception>
    internal bool RunOnce()
    {
        if (!_manual)
        {
            throw new InvalidOperationException("RunOnce turns a manual reactor (Reactor.CreateManual); this one has its own thread.");
        }

        CheckThread();
        ObjectDisposedException.ThrowIf(_closed, this);
        var events = stackalloc epoll_event[MaxEvents];
        var previous = t_current;
        t_current = this;
        try
        {
            bool busy = Turn(allDescriptors: true, events);
            Sample();
            return busy;
        }
        finally
        {
            t_current = previous;
        }
    }

    internal void ModifyWatch(FdWatch watch, FdEvents events)
    {
        CheckThread();
        epoll_event ev = default;
        ev.events = (int)events;
        ev.data.u64 = Token(watch);
        if (LibC.epoll_ctl(_epoll.Fd, LibC.EPOLL_CTL_MOD, watch.Fd, &ev) != 0)
        {
            throw new IOException($"Reactor '{_name}': epoll_ctl(MOD, fd {watch.Fd}) failed: {Errno.Describe(LibC.errno)}.");
        }
    }

    internal void RemoveWatch(FdWatch watch)
    {
        if (_closed)
        {
            return; // the reactor released every watch when it stopped
        }

        CheckThread();
        if (_watches[watch.Id] != watch)
        {
            return;
        }

        if (!_closed)
        {
            LibC.epoll_ctl(_epoll.Fd, LibC.EPOLL_CTL_DEL, watch.Fd, null);
        }

        _watches[watch.Id] = null;
        _freeWatchIds.Push(watch.Id);
        _watchCount--;
        if (watch.PollWhileBusy)
        {
            _busyWatchCount--;
        }

        watch.Handle.DangerousRelease();
    }

    internal void RemovePoller(IPoller poller)
    {
        if (_closed)
        {
            return;
        }

        CheckThread();
        _pollers.Remove(poller);
    }

    internal void ScheduleTimer(ReactorTimer timer, TimeSpan due)
    {
        CheckThread();
        long ticks = due <= TimeSpan.Zero ? 0 : (long)Math.Min(due.TotalSeconds * _time.TimestampFrequency, long.MaxValue / 4);
        long at = _time.GetTimestamp() + ticks;
        if (timer.Index < 0)
        {
            timer.Index = _timers.Count;
            _timers.Add(timer);
        }

        timer.Due = at;
        if (at < _nextDue)
        {
            _nextDue = at;
        }
    }

    internal void CancelTimer(ReactorTimer timer)
    {
        CheckThread();
        if (timer.Index < 0)
        {
            return;
        }

        RemoveTimerAt(timer.Index);
        timer.Due = long.MaxValue;
    }

    internal void Assign(int delta) => Interlocked.Add(ref _assigned, delta);

    private static ulong Token(FdWatch watch) => ((ulong)watch.Generation << 32) | (uint)watch.Id;

    private static int s_generation;

    private BlockQueue Open(BlockDevice device, int depth, bool shared)
    {
        ArgumentNullException.ThrowIfNull(device);
        CheckThread();
        ObjectDisposedException.ThrowIf(_closed, this);
        if (shared)
        {
            foreach (var entry in _queues)
            {
                if (entry.Shared && entry.Device == device)
                {
                    entry.Users++;
                    return entry.Queue;
                }
            }
        }

        var queue = device.CreateQueue(depth);
        bool watching = queue.TrySetWakeSource(_epoll.Fd);
        _queues.Add(new QueueEntry(device, queue, shared, watching));
        return queue;
    }

    private void CheckThread()
    {
        int current = Environment.CurrentManagedThreadId;
        int owner = Volatile.Read(ref _ownerThreadId);
        if (owner == current)
        {
            return;
        }

        if (_manual && owner == 0 && Interlocked.CompareExchange(ref _ownerThreadId, current, 0) == 0)
        {
            return;
        }

        throw new InvalidOperationException(
            $"Reactor '{_name}' was used from another thread; register, watch and open queues on the reactor's thread (use Post or InvokeAsync to get there).");
    }

    private void Run()
    {
        Volatile.Write(ref _ownerThreadId, Environment.CurrentManagedThreadId);
        t_current = this;
        RequestStages.PrepareThread(); // the histograms of the requests traced on this thread, before the count starts
        _allocationBase = GC.GetAllocatedBytesForCurrentThread();
        var events = stackalloc epoll_event[MaxEvents];
        try
        {
            _lastWork = _time.GetTimestamp();
            while (true)
            {
                bool busy = Turn(allDescriptors: false, events);
                Sample();
                if (_stopping && CanStop())
                {
                    break;
                }

                long now = _time.GetTimestamp();
                if (busy)
                {
                    _lastWork = now;
                    continue;
                }

                if (now - _lastWork < _pollTicks)
                {
                    Thread.SpinWait(8);
                    continue;
                }

                if (Sleep(events))
                {
                    _lastWork = _time.GetTimestamp();
                }
            }

            Close();
        }
        catch (Exception e)
        {
            Environment.FailFast($"Hci reactor '{_name}' failed: an exception escaped its loop (a poller, watcher, timer or message must handle its own errors): {e}");
        }
    }

    // One pass over everything; true when anything was done.
    private bool Turn(bool allDescriptors, epoll_event* events)
    {
        _turns++;
        bool busy = RunMessages();
        var pollers = _pollers;
        for (int i = 0; i < pollers.Count; i++)
        {
            if (pollers[i].Poll() == PollStatus.Busy)
            {
                busy = true;
            }
        }

        if (allDescriptors ? _watchCount > 0 : _busyWatchCount > 0)
        {
            busy |= DispatchDescriptors(0, events);
        }

        busy |= PollQueues();
        if (_nextDue != long.MaxValue)
        {
            busy |= FireTimers();
        }

        return busy;
    }

    // Announces the sleep, asks the pollers to arm, and sleeps; true when the preparation found work instead.
    private bool Sleep(epoll_event* events)
    {
        Interlocked.Exchange(ref _sleeping, 1);
        int timeout = -1;
        bool busy = !_inbox.IsEmpty || _stopping;
        var pollers = _pollers;
        for (int i = 0; i < pollers.Count && !busy; i++)
        {
            if (pollers[i].PrepareToSleep(ref timeout) == PollStatus.Busy)
            {
                busy = true;
            }
        }

        if (busy)
        {
            Interlocked.Exchange(ref _sleeping, 0);
            return true;
        }

        if (_nextDue != long.MaxValue)
        {
            long left = _nextDue - _time.GetTimestamp();
            int ms = left <= 0 ? 0 : (int)Math.Min((left * 1000 / _time.TimestampFrequency) + 1, int.MaxValue);
            timeout = timeout < 0 ? ms : Math.Min(timeout, ms);
        }

        QueueEntry? only = null;
        int inFlight = 0;
        foreach (var entry in _queues)
        {
            if (entry.Queue.InFlight > 0 && !entry.Queue.CompletesThroughReactor)
            {
                inFlight++;
                only = entry;
            }
        }

        _sleeps++;
        if (inFlight == 1)
        {
            // Sleep in the queue: its wait ends on a completion, and (when it watches the epoll set) on a kick, a
            // socket or a post; one that cannot watch it is woken by Wake and looked at again within 1 ms.
            var queue = only!.Queue;
            if (!only.Watching)
            {
                Volatile.Write(ref _sleepingIn, queue);
                timeout = timeout < 0 ? 1 : Math.Min(timeout, 1);
            }

            if (Volatile.Read(ref _sleeping) != 0)
            {
                queue.Poll(1, timeout);
            }

            Volatile.Write(ref _sleepingIn, null);
            Interlocked.Exchange(ref _sleeping, 0);

            // The queue's wait ended on a completion, a watched descriptor or a wake: look at the descriptors (and drain
            // the wake eventfd) every time. Skipping this when only a completion seemed to end the wait lost wakes
            // under load (an iSCSI task management answer waited for the initiator's timeout).
            DispatchDescriptors(0, events);

            return false;
        }

        if (inFlight > 1)
        {
            timeout = timeout < 0 ? 1 : Math.Min(timeout, 1);
        }

        DispatchDescriptors(timeout, events);
        Interlocked.Exchange(ref _sleeping, 0);
        return false;
    }

    private bool DispatchDescriptors(int timeout, epoll_event* events)
    {
        int n = LibC.epoll_wait(_epoll.Fd, events, MaxEvents, timeout);
        bool any = false;
        for (int i = 0; i < n; i++)
        {
            ulong token = events[i].data.u64;
            if (token == WakeToken)
            {
                ulong value;
                LibC.read(_wakeFd.Fd, &value, sizeof(ulong));
                continue;
            }

            int id = (int)(uint)token;
            var watch = (uint)id < (uint)_watches.Length ? _watches[id] : null;
            if (watch == null || watch.Generation != (uint)(token >> 32))
            {
                continue; // removed by an earlier handler in this batch
            }

            any = true;
            watch.Watcher.OnReady((FdEvents)events[i].events);
        }

        return any;
    }

    private bool RunMessages()
    {
        bool any = false;
        while (_inbox.TryDequeue(out var message))
        {
            any = true;
            message.Run();
        }

        return any;
    }

    private bool PollQueues()
    {
        bool any = false;
        bool idle = false;
        var queues = _queues;
        for (int i = 0; i < queues.Count; i++)
        {
            var entry = queues[i];
            if (entry.Queue.InFlight > 0)
            {
                any |= entry.Queue.Poll(0, 0) > 0;
            }
            else if (entry.Users == 0)
            {
                idle = true;
            }
        }

        if (idle)
        {
            CloseIdleQueues();
        }

        return any;
    }

    private void CloseIdleQueues()
    {
        for (int i = _queues.Count - 1; i >= 0; i--)
        {
            var entry = _queues[i];
            if (entry.Users == 0 && entry.Queue.InFlight == 0)
            {
                _queues.RemoveAt(i);
                entry.Queue.Dispose();
            }
        }
    }

    private bool FireTimers()
    {
        long now = _time.GetTimestamp();
        if (now < _nextDue)
        {
            return false;
        }

        bool any = false;
        long next = long.MaxValue;
        for (int i = 0; i < _timers.Count;)
        {
            var timer = _timers[i];
            if (timer.Due <= now)
            {
                RemoveTimerAt(i);
                timer.Due = long.MaxValue;
                timer.Callback();
                any = true;
                i = 0; // the callback may have scheduled or cancelled timers
                next = long.MaxValue;
                continue;
            }

            next = Math.Min(next, timer.Due);
            i++;
        }

        _nextDue = next;
        return any;
    }

    private void RemoveTimerAt(int index)
    {
        var timer = _timers[index];
        int last = _timers.Count - 1;
        if (index != last)
        {
            var moved = _timers[last];
            _timers[index] = moved;
            moved.Index = index;
        }

        _timers.RemoveAt(last);
        timer.Index = -1;
        if (_timers.Count == 0)
        {
            _nextDue = long.MaxValue;
        }
    }

    private bool CanStop()
    {
        if (_stopDeadline == 0)
        {
            _stopDeadline = Stopwatch.GetTimestamp() + _stopTicks;
        }

        if (Stopwatch.GetTimestamp() >= _stopDeadline)
        {
            return true; // Close leaves the queues that still have I/O in flight open
        }

        if (!_inbox.IsEmpty)
        {
            return false;
        }

        foreach (var entry in _queues)
        {
            if (entry.Queue.InFlight > 0)
            {
                return false;
            }
        }

        return true;
    }

    private void Close()
    {
        _closed = true;
        foreach (var entry in _queues)
        {
            if (entry.Queue.InFlight > 0)
            {
                AbandonedQueues++; // the device never answered: leave its memory to it rather than hang or free it under it
                continue;
            }

            entry.Queue.Dispose();
        }

        _queues.Clear();
        _pollers.Clear();
        _timers.Clear();
        for (int i = 0; i < _watches.Length; i++)
        {
            if (_watches[i] is { } watch)
            {
                _watches[i] = null;
                watch.Handle.DangerousRelease();
            }
        }

        AbandonInbox();
        s_live.TryRemove(this, out _);
        _epoll.Dispose();
        _wakeFd.Dispose();
        _stopped.TrySetResult();
    }

    private void AbandonInbox()
    {
        while (_inbox.TryDequeue(out var message))
        {
            message.Abandon();
        }
    }

    private void Sample()
    {
        if (_manual)
        {
            return; // a manual reactor runs on a test's thread, whose other allocations are not the reactor's
        }

        Volatile.Write(ref _allocated, GC.GetAllocatedBytesForCurrentThread() - _allocationBase);
    }

    private void WriteWake()
    {
        bool added = false;
        try
        {
            _wakeFd.DangerousAddRef(ref added);
            ulong one = 1;
            LibC.write(_wakeFd.Fd, &one, sizeof(ulong));
        }
        catch (ObjectDisposedException)
        {
            // stopped meanwhile: nothing to wake
        }
        finally
        {
            if (added)
            {
                _wakeFd.DangerousRelease();
            }
        }
    }

    private sealed class QueueEntry(BlockDevice device, BlockQueue queue, bool shared, bool watching)
    {
        public BlockDevice Device { get; } = device;

        public BlockQueue Queue { get; } = queue;

        public bool Shared { get; } = shared;

        public bool Watching { get; } = watching;

        public int Users { get; set; } = 1;
    }

    private sealed class PollerRegistration(Reactor reactor, IPoller poller) : IDisposable
    {
        private IPoller? _poller = poller;

        public void Dispose()
        {
            if (_poller is { } p)
            {
                reactor.RemovePoller(p);
                _poller = null;
            }
        }
    }

    private sealed class ActionMessage(Action action) : IReactorMessage
    {
        public void Run() => action();
    }

    private sealed class InvokeMessage<T>(Func<T> func) : IReactorMessage
    {
        private readonly TaskCompletionSource<T> _done = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task<T> Task => _done.Task;

        public void Run()
        {
            try
            {
                _done.TrySetResult(func());
            }
            catch (Exception e)
            {
                _done.TrySetException(e);
            }
        }

        public void Abandon() => _done.TrySetException(new ObjectDisposedException("Reactor", "The reactor stopped before the work could run."));
    }
}
