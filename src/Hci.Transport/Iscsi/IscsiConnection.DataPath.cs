using System.Buffers.Binary;
using System.Diagnostics;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Hci.Core.Blocks;
using Hci.Core.Buffers;
using Hci.Transport.Scsi;
using Microsoft.Extensions.Logging;
using Tmds.Linux;

namespace Hci.Transport.Iscsi;

/// <summary>
/// The full feature phase. One thread per connection owns the socket and one <see cref="BlockQueue"/> per LUN:
/// it reads whatever the initiator sent, parses every whole PDU in it, submits READs and WRITEs straight to its
/// queues (all of them with one system call), reaps completions, and sends every answer ready with one
/// <c>sendmsg</c>. A Data-In's data goes from the command's own buffer, with no copy. Commands, buffers and
/// requests come from a pool sized by the command window, so a steady stream of I/O allocates nothing. Other
/// commands (INQUIRY, MODE SENSE, UNMAP, reservations ...) run through <see cref="ScsiDisk.ExecuteAsync"/> and
/// post their result back to the thread.
/// </summary>
internal sealed unsafe partial class IscsiConnection : IBlockCompletionHandler
{
    private const int MaxEvents = 8;

    // Data buffers a connection may hold at once (commands waiting for data or running, and the pool's spares):
    // an initiator cannot make the target allocate more by opening commands it never completes. The target's
    // MaxBufferedBytes bounds all connections together.
    private const long MaxBufferedBytes = 256L * 1024 * 1024;

    // Answers held for an initiator that does not read them, past which the connection is dropped.
    private const long MaxPendingOutput = 64L * 1024 * 1024;

    private readonly Lock _phaseLock = new();
    private readonly TaskCompletionSource _dataPathDone = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private const int WarmUpCommands = 1024;

    private readonly List<IscsiTask> _sent = new(64);
    private readonly List<IscsiTask> _completed = new(64);
    private readonly Dictionary<uint, IscsiTask> _tasks = new(64);
    private readonly Queue<IscsiTask> _posted = new();
    private readonly Dictionary<int, IscsiLunPath> _paths = [];
    private IscsiPduReader _reader = null!;
    private IscsiPduWriter _writer = null!;
    private IscsiTaskPool _pool = null!;
    private Thread? _dataPathThread;
    private volatile bool _stopRequested;
    private int _fd = -1;
    private int _epoll = -1;
    private int _wake = -1;
    private bool _wantWrite;
    private bool _loggedOut;
    private bool _peerClosed;
    private bool _warnedDataSn;
    private bool _shuttingDown;
    private int _maxSlots;
    private int _slowRunning;
    private uint _nextTtt = 1;
    private long _commands;
    private long _setupAllocated;
    private long _warmAllocated = -1;
    private long _lastReceive;
    private long _pingSentAt;
    private uint _pingTag;
    private BlockQueue? _watched;
    private string? _initiatorPort;

    private bool HeaderDigestOn => _digestsActive && _session.HeaderDigest;

    private bool DataDigestOn => _digestsActive && _session.DataDigest;

    private bool StartDataPath()
    {
        lock (_phaseLock)
        {
            if (_closed != 0 || _closing.IsCancellationRequested)
            {
                return false;
            }

            _dataPathThread = new Thread(RunDataPath) { IsBackground = true, Name = $"iscsi-c{_nexus}" };
        }

        _dataPathThread.Start();
        return true;
    }

    private void RequestStop()
    {
        _stopRequested = true;
        Signal();
    }

    private void Signal()
    {
        int wake = Volatile.Read(ref _wake);
        if (wake >= 0)
        {
            ulong one = 1;
            LibC.write(wake, &one, sizeof(ulong));
        }
    }

    // ---- the thread ----

    private void RunDataPath()
    {
        long allocatedAtStart = GC.GetAllocatedBytesForCurrentThread();
        long allocated = 0;
        long steady = 0;
        string? reason = null;
        try
        {
            Open();
            Loop();
        }
        catch (ProtocolException e)
        {
            reason = e.Message;
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException)
        {
        }
        catch (Exception e)
        {
            _logger.LogError(e, "iSCSI connection from {Peer} ({Initiator}) failed; dropping it.", SafePeer(), _initiatorName);
        }
        finally
        {
            long now = GC.GetAllocatedBytesForCurrentThread();
            allocated = now - allocatedAtStart - _setupAllocated;
            steady = _warmAllocated < 0 ? 0 : now - _setupAllocated - _warmAllocated;
            if (reason != null)
            {
                _logger.LogWarning("iSCSI connection from {Peer} ({Initiator}): {Reason}; dropping it.", SafePeer(), _initiatorName, reason);
            }

            Shutdown();
            _target.Account(_commands, allocated, Math.Max(0, _commands - WarmUpCommands), steady);
            _logger.LogDebug("iSCSI connection from {Initiator} closed: {Commands} commands, {Allocated} bytes allocated on its data path after set-up.", _initiatorName, _commands, allocated);
            _dataPathDone.TrySetResult();
        }
    }

    private void Open()
    {
        long before = GC.GetAllocatedBytesForCurrentThread();
        _fd = (int)_socket.Handle;
        _epoll = LibC.epoll_create1(LibC.EPOLL_CLOEXEC);
        int wake = LibC.eventfd(0, LibC.EFD_CLOEXEC | LibC.EFD_NONBLOCK);
        if (_epoll < 0 || wake < 0)
        {
            throw new IOException($"epoll or eventfd failed: {Errno.Describe(LibC.errno)}.");
        }

        Volatile.Write(ref _wake, wake);
        Watch(wake, LibC.EPOLLIN, LibC.EPOLL_CTL_ADD);
        Watch(_fd, LibC.EPOLLIN, LibC.EPOLL_CTL_ADD);

        // Room for two of the largest PDUs the initiator may send, so one can arrive while the last is handled.
        int maxPdu = IscsiHeader.Length + 1020 + 4 + _session.MaxRecvDataSegmentLength + 3 + 4;
        _reader = new IscsiPduReader(Math.Max(2 * maxPdu, 256 * 1024))
        {
            HeaderDigest = HeaderDigestOn,
            DataDigest = DataDigestOn,
            MaxDataSegmentLength = _session.MaxRecvDataSegmentLength,
        };

        // Headers, digests and small data segments (sense, text, a ping's echo) are written here until sent.
        _writer = new IscsiPduWriter((64 * 1024) + _session.MaxRecvDataSegmentLength + 64, MaxPendingOutput)
        {
            HeaderDigest = HeaderDigestOn,
            DataDigest = DataDigestOn,
        };
        _maxSlots = Math.Min(_target.Options.CommandWindow + 16, 1040);
        _pool = new IscsiTaskPool(_maxSlots, MaxBufferedBytes, _target);
        _tasks.EnsureCapacity(_maxSlots);
        foreach (var (lun, disk) in _target.Luns)
        {
            _paths[lun] = new IscsiLunPath(disk);
        }

        _initiatorPort = $"{_initiatorName},i,0x{_isid}"; // the initiator port's name (RFC 7143, 13.6 of SPC-4's TransportID)
        _lastReceive = Stopwatch.GetTimestamp();
        _setupAllocated += GC.GetAllocatedBytesForCurrentThread() - before;
    }

    private void Watch(int fd, int events, int op)
    {
        epoll_event ev = default;
        ev.events = events;
        ev.data.fd = fd;
        if (LibC.epoll_ctl(_epoll, op, fd, &ev) != 0)
        {
            throw new IOException($"epoll_ctl failed: {Errno.Describe(LibC.errno)}.");
        }
    }

    private void Loop()
    {
        var events = stackalloc epoll_event[MaxEvents];
        long pollTicks = (long)(_target.Options.PollWindow.TotalSeconds * Stopwatch.Frequency);
        long lastWork = Stopwatch.GetTimestamp();
        while (!_stopRequested)
        {
            bool work = Receive();
            work |= RunPosted();
            work |= PollQueues();
            Flush();
            if ((_loggedOut && _writer.IsEmpty) || _peerClosed)
            {
                return;
            }

            long now = Stopwatch.GetTimestamp();
            if (work)
            {
                lastWork = now;
                continue;
            }

            if (now - lastWork < pollTicks)
            {
                Thread.SpinWait(8);
                continue;
            }

            Sleep(events, Ping(now));
        }
    }

    /// <summary>Pings an idle initiator, or gives up on one that did not answer; returns how long to sleep.</summary>
    private int Ping(long now)
    {
        var o = _target.Options;
        if (_discovery)
        {
            // Discovery sessions are short (SendTargets, then a logout) and are not pinged: one silent for the login
            // timeout is dropped, so that idle ones cannot pile up.
            long idle = _lastReceive + (long)(o.LoginTimeout.TotalSeconds * Stopwatch.Frequency);
            if (now >= idle)
            {
                throw new ProtocolException($"a discovery session silent for {o.LoginTimeout.TotalSeconds} s");
            }

            return Milliseconds(idle - now);
        }

        if (o.NopInInterval <= TimeSpan.Zero)
        {
            return -1;
        }

        long interval = (long)(o.NopInInterval.TotalSeconds * Stopwatch.Frequency);
        if (_pingSentAt != 0)
        {
            long deadline = _pingSentAt + (long)(o.NopInTimeout.TotalSeconds * Stopwatch.Frequency);
            if (now >= deadline)
            {
                throw new ProtocolException($"no answer to a NOP-In in {o.NopInTimeout.TotalSeconds} s");
            }

            return Milliseconds(deadline - now);
        }

        if (now - _lastReceive < interval)
        {
            return Milliseconds(_lastReceive + interval - now);
        }

        _pingTag = NextTargetTransferTag();

        Span<byte> pdu = stackalloc byte[IscsiHeader.Length];
        var p = NopInPdu.Create(pdu);
        p.InitiatorTaskTag = ReservedTag;
        p.TargetTransferTag = _pingTag;
        Stamp(pdu, advance: false);
        QueuePdu(pdu, null, 0, copy: true);
        Flush();
        _pingSentAt = now;
        return Milliseconds((long)(o.NopInTimeout.TotalSeconds * Stopwatch.Frequency));
    }

    private static int Milliseconds(long ticks) => (int)Math.Clamp((ticks * 1000 / Stopwatch.Frequency) + 1, 1, int.MaxValue);

    private void Sleep(epoll_event* events, int timeout)
    {
        BlockQueue? only = null;
        int busy = 0;
        foreach (var path in _paths.Values)
        {
            if (path.Queue is { InFlight: > 0 } q)
            {
                busy++;
                only = q;
            }
        }

        if (busy == 1 && only == _watched)
        {
            // The queue's wait also ends when the epoll set is ready: data, room to send, or a posted result.
            only!.Poll(1, timeout);
            Drain(events, 0);
        }
        else
        {
            Drain(events, busy > 0 ? 1 : timeout);
        }
    }

    private void Drain(epoll_event* events, int timeout)
    {
        int n = LibC.epoll_wait(_epoll, events, MaxEvents, timeout);
        for (int i = 0; i < n; i++)
        {
            if (events[i].data.fd == _wake)
            {
                ulong value;
                LibC.read(_wake, &value, sizeof(ulong));
            }
        }
    }

    // ---- input ----

    /// <summary>Reads what the socket has and handles every whole PDU; false when nothing came.</summary>
    private bool Receive()
    {
        bool any = false;
        for (int reads = 0; reads < 4 && !_loggedOut && !_stopRequested && !_peerClosed; reads++)
        {
            any |= HandleReceived();
            _reader.Compact();
            long n = LibC.recv(_fd, _reader.Tail, _reader.FreeBytes, LibC.MSG_DONTWAIT);
            if (n > 0)
            {
                _reader.Advance((int)n);
                _lastReceive = Stopwatch.GetTimestamp();
                _pingSentAt = 0; // anything from the initiator shows it is alive
                any = true;
                continue;
            }

            if (n == 0)
            {
                _peerClosed = true; // the initiator closed the connection
                break;
            }

            int errno = LibC.errno;
            if (errno == Errno.EINTR)
            {
                continue;
            }

            if (errno == Errno.EAGAIN)
            {
                break;
            }

            throw new IOException($"receive failed: {Errno.Describe(errno)}");
        }

        any |= HandleReceived();
        return any;
    }

    /// <summary>Handles every whole PDU in the reader; true when there was one.</summary>
    private bool HandleReceived()
    {
        bool any = false;
        while (!_loggedOut)
        {
            switch (_reader.TryRead(out var pdu))
            {
                case PduReadStatus.Pdu:
                    Handle(pdu);
                    any = true;
                    break;
                case PduReadStatus.DataSegmentTooLong:
                    throw new ProtocolException($"a data segment over the negotiated {_session.MaxRecvDataSegmentLength} bytes");
                case PduReadStatus.HeaderDigestError:
                    throw new ProtocolException("header digest error");
                default:
                    return any;
            }
        }

        return any;
    }

    // ---- execution ----

    private void Dispatch(IscsiTask s)
    {
        if (++_commands == WarmUpCommands)
        {
            _warmAllocated = GC.GetAllocatedBytesForCurrentThread() - _setupAllocated;
        }

        s.State = IscsiTaskState.Running;
        var task = s.Task;
        if (task.Cdb[0] == 0xA0)
        {
            ReportLuns(task);
            Complete(s);
            return;
        }

        if (s.Path == null)
        {
            if (task.Cdb[0] == 0x12 && task.Buffer != null)
            {
                // INQUIRY to a LUN that does not exist: peripheral qualifier 3, device type 1Fh.
                task.Buffer.Span[..Math.Min(36, task.ExpectedLength)].Clear();
                task.Buffer.Span[0] = 0x7F;
                task.DataLength = 36;
            }
            else
            {
                task.Fail(SenseKey.IllegalRequest, 0x25, 0); // LOGICAL UNIT NOT SUPPORTED
            }

            Complete(s);
            return;
        }

        var disk = s.Path.Disk;
        switch (disk.PrepareFast(task, out var operation, out long offset, out int length, out var flags))
        {
            case ScsiFastPath.Done:
                Complete(s);
                return;
            case ScsiFastPath.Submit:
            {
                var queue = s.Path.Queue ?? OpenQueue(s.Path);
                var r = s.Request;
                r.Reset();
                if (operation == BlockOperation.Flush)
                {
                    r.SetRange(BlockOperation.Flush, 0, 0);
                }
                else
                {
                    r.SetReadWrite(operation, offset, s.Buffer!.Pointer, length, flags);
                }

                r.Class = IoClass.Vm;
                r.Tenant = _nexus;
                r.Handler = this;
                r.UserState = s;
                queue.Submit(r);
                return;
            }
        }

        _slowRunning++;
        ValueTask run;
        try
        {
            run = disk.ExecuteAsync(task);
        }
        catch (Exception e)
        {
            _slowRunning--;
            Failed(task, e);
            Complete(s);
            return;
        }

        if (run.IsCompleted)
        {
            try
            {
                run.GetAwaiter().GetResult();
            }
            catch (Exception e)
            {
                Failed(task, e);
            }

            _slowRunning--;
            Complete(s);
            return;
        }

        _ = IscsiSlowCommand.AwaitAsync(run, this, s);
    }

    private void Failed(ScsiTask task, Exception e)
    {
        _logger.LogError(e, "SCSI command {Opcode:x2} failed.", task.Cdb[0]);
        task.Fail(SenseKey.HardwareError, 0x44, 0); // INTERNAL TARGET FAILURE
    }

    internal void PostSlow(object slot, Exception? error)
    {
        var s = (IscsiTask)slot;
        if (error != null)
        {
            Failed(s.Task, error);
        }

        lock (_posted)
        {
            _posted.Enqueue(s);
        }

        Signal();
    }

    private bool RunPosted()
    {
        if (_slowRunning == 0)
        {
            return false;
        }

        bool any = false;
        while (true)
        {
            IscsiTask? s;
            lock (_posted)
            {
                if (!_posted.TryDequeue(out s))
                {
                    return any;
                }
            }

            _slowRunning--;
            any = true;
            Complete(s);
        }
    }

    private BlockQueue OpenQueue(IscsiLunPath path)
    {
        long before = GC.GetAllocatedBytesForCurrentThread();
        var queue = path.Disk.Device.CreateQueue(_maxSlots);
        queue.BatchSubmissions = true; // one io_uring_enter for all that one read of the socket brought
        if (_watched == null && queue.TrySetWakeSource(_epoll))
        {
            _watched = queue;
        }

        path.Queue = queue;
        _setupAllocated += GC.GetAllocatedBytesForCurrentThread() - before;
        return queue;
    }

    private bool PollQueues()
    {
        int done = 0;
        foreach (var path in _paths.Values)
        {
            if (path.Queue is { InFlight: > 0 } q) // submitted but not yet sent counts as in flight too
            {
                done += q.Poll(0, 0);
            }
        }

        AnswerCompleted();
        return done > 0;
    }

    /// <summary>A request from the fast path completed (inside <see cref="BlockQueue.Poll"/>, on this thread).</summary>
    /// <param name="request">The request.</param>
    public void OnCompleted(BlockRequest request)
    {
        // Only recorded here: answering sends, and a send can fail (a peer gone, one that stopped reading), which
        // must not throw out of the queue's completion delivery. The loop answers right after the poll.
        var s = (IscsiTask)request.UserState!;
        s.Path!.Disk.CompleteFast(s.Task, request.Operation != BlockOperation.Read, request.Succeeded);
        _completed.Add(s);
    }

    /// <summary>Answers the commands whose requests completed in the last polls.</summary>
    private void AnswerCompleted()
    {
        for (int i = 0; i < _completed.Count; i++)
        {
            Complete(_completed[i]);
        }

        _completed.Clear();
    }

    private void Complete(IscsiTask s)
    {
        if (s.Abort is { } abort)
        {
            s.Abort = null;
            _pool.Release(s);
            if (--abort.Pending == 0 && !_shuttingDown)
            {
                QueueTaskManagementResponse(abort.Itt, abort.Response);
            }

            return;
        }

        _tasks.Remove(s.Itt);
        if (_shuttingDown)
        {
            _pool.Release(s);
            return;
        }

        Respond(s);
    }

    private void ReportLuns(ScsiTask task)
    {
        var luns = _target.SortedLuns;
        int size = 8 + (8 * luns.Length);
        task.DataLength = size;
        if (task.Buffer == null)
        {
            return;
        }

        Span<byte> list = task.Buffer.Span[..Math.Min(task.ExpectedLength, task.Buffer.Length)];
        Span<byte> entry = stackalloc byte[8];
        for (int i = 0; i < size && i < list.Length; i += 8)
        {
            entry.Clear();
            if (i == 0)
            {
                BinaryPrimitives.WriteUInt32BigEndian(entry, (uint)(8 * luns.Length));
            }
            else
            {
                BinaryPrimitives.WriteUInt64BigEndian(entry, EncodeLun(luns[(i / 8) - 1]));
            }

            entry[..Math.Min(8, list.Length - i)].CopyTo(list[i..]);
        }
    }

    private static int DecodeLun(ulong lun)
    {
        int b0 = (int)(lun >> 56);
        int b1 = (int)(lun >> 48) & 0xFF;
        return (b0 >> 6) switch
        {
            0 => b0 == 0 ? b1 : -1,
            1 => ((b0 & 0x3F) << 8) | b1,
            _ => -1,
        };
    }

    private static ulong EncodeLun(int lun) => lun < 256 ? (ulong)lun << 48 : (ulong)(0x4000 | lun) << 48;

    /// <summary>Sends what the socket takes; true when all the output is gone.</summary>
    private bool Flush()
    {
        if (!_writer.Flush(_socket.SafeHandle))
        {
            if (!_wantWrite)
            {
                _wantWrite = true;
                Watch(_fd, LibC.EPOLLIN | LibC.EPOLLOUT, LibC.EPOLL_CTL_MOD);
            }

            return false;
        }

        foreach (var s in _sent)
        {
            _pool.Release(s);
        }

        _sent.Clear();
        if (_wantWrite)
        {
            _wantWrite = false;
            Watch(_fd, LibC.EPOLLIN, LibC.EPOLL_CTL_MOD);
        }

        return true;
    }

    // ---- shutdown ----

    /// <summary>Waits for every request started here, then frees the connection's resources.</summary>
    private void Shutdown()
    {
        _shuttingDown = true;
        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
        }

        try
        {
            // The device may still write into buffers of requests in flight: they must finish first.
            var deadline = Stopwatch.GetTimestamp() + (60 * Stopwatch.Frequency);
            while (Stopwatch.GetTimestamp() < deadline)
            {
                bool busy = false;
                foreach (var path in _paths.Values)
                {
                    if (path.Queue is { InFlight: > 0 } q)
                    {
                        q.Poll(1, 100);
                        busy = true;
                    }
                }

                AnswerCompleted();

                RunPosted();
                if (_slowRunning > 0)
                {
                    busy = true;
                    Thread.Sleep(1);
                }

                if (!busy)
                {
                    break;
                }
            }
        }
        catch (Exception e)
        {
            _logger.LogError(e, "iSCSI connection from {Initiator}: draining its requests failed.", _initiatorName);
        }

        bool drained = _slowRunning == 0;
        foreach (var path in _paths.Values)
        {
            drained &= path.Queue is not { InFlight: > 0 };
            if (path.Queue is { InFlight: 0 } q)
            {
                q.Dispose();
            }

            path.Disk.NexusLost(_nexus);
        }

        if (drained)
        {
            // Only when nothing can touch them any more (a stuck device keeps them, which leaks rather than corrupts).
            _pool?.FreeBuffers();
        }

        _sent.Clear();
        _tasks.Clear();
        lock (_phaseLock)
        {
            _closed = 1;
            int wake = Interlocked.Exchange(ref _wake, -1);
            if (wake >= 0)
            {
                LibC.close(wake);
            }
        }

        if (_epoll >= 0)
        {
            LibC.close(_epoll);
        }

        _reader?.Dispose();
        _writer?.Dispose();
        _socket.Dispose();
        _target.Closed(this);
    }
}

/// <summary>Waits for a command off the data path and hands its result back to the connection's thread.</summary>
internal static class IscsiSlowCommand
{
    public static async Task AwaitAsync(ValueTask run, IscsiConnection connection, object slot)
    {
        Exception? error = null;
        try
        {
            await run.ConfigureAwait(false);
        }
        catch (Exception e)
        {
            error = e;
        }

        connection.PostSlow(slot, error);
    }
}
