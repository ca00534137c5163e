using System.Diagnostics;
using Hci.Core.Blocks;
using Hci.Core.Native;
using Hci.Transport.Virtio;
using Microsoft.Extensions.Logging;
using Tmds.Linux;

namespace Hci.Transport.Vhost;

/// <summary>
/// A data-plane thread: owns one <see cref="BlockQueue"/> on the device and serves any number of virtqueues on
/// it. It sleeps in one wait on its device and on every kick eventfd (the kick eventfds sit in an epoll set
/// that the queue watches, see <see cref="BlockQueue.TrySetWakeSource"/>), so a kick or a completion wakes it
/// with no other thread in between. Rings are added, changed and removed by commands from the control threads;
/// a ring stops only once every request it started has completed.
/// </summary>
internal sealed unsafe class VirtqueueReactor : IDisposable
{
    private const int MaxEvents = 64;

    private readonly BlockDevice _device;
    private readonly int _depth;
    private readonly ILogger _logger;
    private readonly Thread _thread;
    private readonly FileDescriptorHandle _epoll;
    private readonly FileDescriptorHandle _control;
    private readonly Lock _lock = new();
    private readonly List<Action> _commands = [];
    private readonly List<Action> _running = [];
    private readonly List<ReactorRing> _rings = [];
    private readonly ManualResetEventSlim _started = new();
    private BlockQueue? _queue;
    private Exception? _startError;
    private volatile bool _stopping;
    private volatile bool _failed;
    private readonly long _pollTicks;
    private long _kicks;

    public VirtqueueReactor(BlockDevice device, int depth, string name, ILogger logger, TimeSpan pollWindow = default)
    {
        _pollTicks = (long)(pollWindow.TotalSeconds * Stopwatch.Frequency);
        _device = device;
        _depth = depth;
        _logger = logger;
        _epoll = new FileDescriptorHandle(LibC.epoll_create1(LibC.EPOLL_CLOEXEC));
        if (_epoll.IsInvalid)
        {
            throw new IOException($"epoll_create1 failed: {Errno.Describe(LibC.errno)}.");
        }

        _control = new FileDescriptorHandle(LibC.eventfd(0, LibC.EFD_CLOEXEC | LibC.EFD_NONBLOCK));
        if (_control.IsInvalid || !Watch(_control.Fd))
        {
            _control.Dispose();
            _epoll.Dispose();
            throw new IOException($"eventfd failed: {Errno.Describe(LibC.errno)}.");
        }

        _thread = new Thread(Run) { IsBackground = true, Name = name };
        _thread.Start();
        _started.Wait();
        if (_startError != null)
        {
            Dispose();
            throw new IOException($"The reactor could not open a queue on '{device.Name}': {_startError.Message}", _startError);
        }
    }

    /// <summary>Rings served now (for placing new rings on the least loaded reactor).</summary>
    public int RingCount { get; private set; }

    /// <summary>
    /// The reactor's thread stopped on an unexpected exception: its rings were stopped where they had read to,
    /// commands fail at once, and no new ring may be placed on it.
    /// </summary>
    public bool Failed => _failed;

    /// <summary>Kicks read so far.</summary>
    public long Kicks => Interlocked.Read(ref _kicks);

    /// <summary>Runs <paramref name="command"/> on the reactor thread and waits for it.</summary>
    /// <param name="command">The command.</param>
    public void Invoke(Action command)
    {
        if (Environment.CurrentManagedThreadId == _thread.ManagedThreadId)
        {
            command();
            return;
        }

        ThrowIfFailed();
        using var done = new ManualResetEventSlim();
        Exception? error = null;
        Post(() =>
        {
            try
            {
                ThrowIfFailed();
                command();
            }
            catch (Exception e)
            {
                error = e;
            }
            finally
            {
                done.Set();
            }
        });
        // A reactor that fails runs the commands it still holds (see Fail), so this wait ends either way.
        done.Wait();
        if (error != null)
        {
            throw new InvalidOperationException(error.Message, error);
        }
    }

    /// <summary>Starts serving a ring.</summary>
    /// <param name="ring">The ring; its processor is made on the reactor thread.</param>
    public void Add(ReactorRing ring)
    {
        lock (_lock)
        {
            RingCount++;
        }

        try
        {
            Invoke(AddCore);
        }
        catch
        {
            lock (_lock)
            {
                RingCount--;
            }

            throw;
        }

        void AddCore()
        {
            ring.OnFault = e => _logger.LogError(e, "vhost-user {Ring}: handling a request failed unexpectedly; it was answered with an I/O error.", ring.Name);
            ring.Attach(_queue!);
            if (ring.KickFd >= 0 && !Watch(ring.KickFd))
            {
                _logger.LogWarning("Could not watch the kick eventfd of {Ring}: {Error}; polling it instead.", ring.Name, Errno.Describe(LibC.errno));
                ring.Polled = true;
            }

            _rings.Add(ring);
            ring.StartResubmit();
        }
    }

    /// <summary>Stops a ring once its requests have completed; returns where it stopped reading the ring.</summary>
    /// <param name="ring">The ring.</param>
    /// <returns>The next available index it would have read.</returns>
    public ushort Remove(ReactorRing ring)
    {
        if (!_failed)
        {
            Post(() => ring.Stopping = true);
        }

        ring.Stopped.Wait();
        lock (_lock)
        {
            RingCount--;
        }

        return ring.LastAvail;
    }

    /// <summary>Stops the thread; every ring must have been removed.</summary>
    public void Dispose()
    {
        _stopping = true;
        Signal();
        if (_thread.IsAlive && Environment.CurrentManagedThreadId != _thread.ManagedThreadId)
        {
            _thread.Join();
        }

        _control.Dispose();
        _epoll.Dispose();
        _started.Dispose();
    }

    private void Post(Action command)
    {
        lock (_lock)
        {
            if (!_failed)
            {
                _commands.Add(command);
                Signal();
                return;
            }
        }

        // Failed: nobody will run it on the thread. Commands from Invoke fail at once (ThrowIfFailed) and release
        // their caller; Remove's only sets a flag. Either way nobody waits forever.
        command();
    }

    private void ThrowIfFailed()
    {
        if (_failed)
        {
            throw new InvalidOperationException($"The vhost-user reactor {_thread.Name} has failed; it serves no rings.");
        }
    }

    private void Signal()
    {
        ulong one = 1;
        LibC.write(_control.Fd, &one, sizeof(ulong));
        _queue?.Wake();
    }

    private bool Watch(int fd)
    {
        epoll_event ev = default;
        ev.events = LibC.EPOLLIN;
        ev.data.fd = fd;
        return LibC.epoll_ctl(_epoll.Fd, LibC.EPOLL_CTL_ADD, fd, &ev) == 0;
    }

    private void Run()
    {
        try
        {
            _queue = _device.CreateQueue(_depth);
        }
        catch (Exception e)
        {
            _startError = e;
            _started.Set();
            return;
        }

        bool watched = _queue.TrySetWakeSource(_epoll.Fd);
        // A ring is drained in batches and polled right after: one io_uring_enter per batch, not per request
        // (file randread QD32 through the client: about 1.6x the IOPS of submitting each request at once).
        _queue.BatchSubmissions = true;
        _started.Set();
        var events = stackalloc epoll_event[MaxEvents];
        long lastWork = 0;
        try
        {
            while (true)
            {
                RunCommands();
                if (_stopping && _rings.Count == 0)
                {
                    break;
                }

                int taken = 0;
                bool throttled = false;
                bool polled = false;
                foreach (var ring in _rings)
                {
                    if (!ring.Stopping)
                    {
                        taken += ring.Processor!.Process(armKick: false);
                        throttled |= ring.Processor.Throttled;
                        polled |= ring.Polled;
                    }
                }

                int done = _queue.InFlight > 0 ? _queue.Poll(0, 0) : 0;
                bool detached = false;
                for (int i = _rings.Count - 1; i >= 0; i--)
                {
                    var ring = _rings[i];
                    ring.Processor!.FlushNotifications();
                    if (ring.Stopping && ring.Processor.InFlight == 0)
                    {
                        Detach(ring);
                        _rings.RemoveAt(i);
                        detached = true;
                    }
                }

                long now = Stopwatch.GetTimestamp();
                if (taken > 0 || done > 0 || polled || detached)
                {
                    lastWork = now;
                    continue;
                }

                // Busy a moment ago: keep looking at the rings for a while with kicks off, as a guest that just
                // sent a batch is likely to send the next soon (QEMU's adaptive polling does the same).
                if (now - lastWork < _pollTicks)
                {
                    Thread.SpinWait(8);
                    continue;
                }

                // About to sleep: ask every ring for kicks again, and look once more.
                foreach (var ring in _rings)
                {
                    if (!ring.Stopping)
                    {
                        taken += ring.Processor!.Process(armKick: true);
                    }
                }

                if (taken > 0)
                {
                    lastWork = Stopwatch.GetTimestamp();
                    continue;
                }

                // Idle: sleep until a kick, a completion, a command, or a throttle's next look.
                int timeout = throttled ? 1 : -1;
                if (_queue.InFlight > 0)
                {
                    _queue.Poll(1, watched ? timeout : 1);
                    Drain(events, 0);
                }
                else
                {
                    Drain(events, timeout);
                }
            }
        }
        catch (Exception e)
        {
            _logger.LogCritical(e, "The vhost-user reactor {Name} failed; its rings stop.", _thread.Name);
            Fail();
        }
        finally
        {
            if (_queue.InFlight == 0)
            {
                _queue.Dispose();
            }
        }
    }

    // The loop died: every ring stops where it had read to (GET_VRING_BASE must not answer an old index, or the
    // front-end would replay requests already done), commands still queued are failed rather than left waiting,
    // and the server places no new ring here.
    private void Fail()
    {
        List<Action> orphans;
        lock (_lock)
        {
            _failed = true;
            orphans = [.. _commands];
            _commands.Clear();
        }

        foreach (var ring in _rings)
        {
            ring.LastAvail = ring.Virtqueue.LastAvailIndex;
            ring.Stopped.Set();
        }

        _rings.Clear();
        foreach (var command in orphans)
        {
            try
            {
                command();
            }
            catch (Exception e)
            {
                _logger.LogDebug(e, "A command for the failed reactor {Name} failed.", _thread.Name);
            }
        }
    }

    private void Drain(epoll_event* events, int timeout)
    {
        int n = LibC.epoll_wait(_epoll.Fd, events, MaxEvents, timeout);
        for (int i = 0; i < n; i++)
        {
            int fd = events[i].data.fd;
            ulong value;
            if (LibC.read(fd, &value, sizeof(ulong)) == sizeof(ulong) && fd != _control.Fd)
            {
                _kicks++; // one read empties an eventfd
            }
        }
    }

    private void RunCommands()
    {
        lock (_lock)
        {
            if (_commands.Count == 0)
            {
                return;
            }

            _running.AddRange(_commands);
            _commands.Clear();
        }

        foreach (var command in _running)
        {
            command();
        }

        _running.Clear();
    }

    private void Detach(ReactorRing ring)
    {
        if (ring.KickFd >= 0)
        {
            LibC.epoll_ctl(_epoll.Fd, LibC.EPOLL_CTL_DEL, ring.KickFd, null);
        }

        ring.LastAvail = ring.Virtqueue.LastAvailIndex;
        ring.Processor!.Dispose();
        ring.Stopped.Set();
    }
}

/// <summary>A ring as a reactor serves it: the virtqueue, its processor, its eventfds.</summary>
internal sealed unsafe class ReactorRing
{
    private readonly string _serial;
    private readonly int _tenant;
    private readonly Action _signal;
    private ushort[]? _resubmit;

    public ReactorRing(string name, VringStart start, string serial, int tenant)
    {
        Name = name;
        Virtqueue = start.Virtqueue;
        KickFd = start.Kick?.Fd ?? -1;
        Polled = start.Kick == null;
        Call = start.Call;
        _serial = serial;
        _tenant = tenant;
        Inflight = start.Inflight;
        _resubmit = start.Resubmit;
        _signal = RaiseInterrupt;
    }

    public string Name { get; }

    public SplitVirtqueue Virtqueue { get; }

    public int KickFd { get; }

    public bool Polled { get; set; }

    public InflightRegion? Inflight { get; }

    public VirtioBlkQueueProcessor? Processor { get; private set; }

    public bool Stopping { get; set; }

    public ushort LastAvail { get; set; }

    public ManualResetEventSlim Stopped { get; } = new();

    /// <summary>The export is read-only: the processor refuses writes.</summary>
    public bool ReadOnly { get; init; }

    /// <summary>Asked per write: the guest sees a write-through cache.</summary>
    public Func<bool>? WriteThrough { get; init; }

    /// <summary>Told of an unexpected exception while handling a chain (logged by the reactor).</summary>
    public Action<Exception>? OnFault { get; set; }

    /// <summary>The call eventfd (the session owns it); changed on the reactor thread only (QEMU swaps it while the ring runs).</summary>
    public FileDescriptorHandle? Call { get; set; }

    public void Attach(BlockQueue queue)
    {
        Processor = new VirtioBlkQueueProcessor(Virtqueue, queue, _serial, _tenant, _signal)
        {
            Inflight = Inflight,
            ReadOnly = ReadOnly,
            IsWriteThrough = WriteThrough,
            OnFault = OnFault,
        };
    }

    public void StartResubmit()
    {
        if (_resubmit is { Length: > 0 } heads)
        {
            _resubmit = null;
            Processor!.Resubmit(heads);
        }
    }

    private void RaiseInterrupt()
    {
        if (Call is { } call)
        {
            ulong one = 1;
            LibC.write(call.Fd, &one, sizeof(ulong));
        }
    }
}
