using System.Buffers.Binary;
using System.Diagnostics;
using System.Net.Sockets;
using Hci.Core.Blocks;
using Hci.Core.Buffers;
using Hci.Core.Reactors;
using Hci.Transport.Scsi;
using Microsoft.Extensions.Logging;
using Tmds.Linux;

namespace Hci.Transport.Iscsi;

/// <summary>
/// The full feature phase (SPDK's <c>conn.c</c>), on one of the target's shared reactors: the socket is a watched
/// descriptor, the connection a poller, and its LUNs' queues the reactor's queues on their devices, shared with the
/// other connections there. When the socket is readable the connection reads what came into its
/// <see cref="IscsiPduReader"/>, handles every whole PDU in it, submits READs and WRITEs straight to the queues
/// (sent with the reactor's next poll of them), and answers through its <see cref="IscsiPduWriter"/> with one
/// <c>sendmsg</c>. A Data-In's data goes from the command's own buffer, with no copy. Tasks and buffers come from an
/// <see cref="IoSlotPool{TSlot}"/> sized by the command window, so a steady stream of I/O allocates nothing. Other
/// commands (INQUIRY, MODE SENSE, UNMAP, reservations ...) run through <see cref="ScsiDisk.ExecuteAsync"/> and post
/// their task back to the reactor. An unexpected exception drops this connection, never the reactor.
/// </summary>
internal sealed unsafe partial class IscsiConnection : IBlockCompletionHandler, IFdWatcher, IPoller
{
    // Data buffers a connection may hold at once (commands waiting for data or running, and the pool's spares):
    // an initiator cannot make the target allocate more by opening commands it never completes. The target's
    // MaxBufferedBytes bounds all connections together.
    private const long MaxBufferedBytes = 256L * 1024 * 1024;

    // Answers held for an initiator that does not read them, past which the connection is dropped.
    private const long MaxPendingOutput = 64L * 1024 * 1024;

    // How long a closing connection waits for its requests in the device before it leaves their buffers behind.
    private static readonly TimeSpan DrainTimeout = TimeSpan.FromSeconds(60);

    private readonly Lock _phaseLock = new();
    private readonly TaskCompletionSource _dataPathDone = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly List<IscsiTask> _sent = new(64);
    private readonly List<IscsiTask> _completed = new(64);
    private readonly Dictionary<uint, IscsiTask> _tasks = new(64);
    private readonly Dictionary<int, IscsiLunPath> _paths = [];

    /// <summary>Paths of LUNs removed while this connection ran: commands in flight may still use their queues, which
    /// are given back when the connection ends.</summary>
    private readonly List<IscsiLunPath> _retiredPaths = [];

    /// <summary>The target's <see cref="ScsiLunMap.Version"/> that <see cref="_paths"/> reflects.</summary>
    private int _lunVersion;

    /// <summary>The LUNs changed since the last command: the next one (but INQUIRY, REPORT LUNS, REQUEST SENSE) to a
    /// unit gets the unit attention REPORTED LUNS DATA HAS CHANGED (SPC-4 6.33).</summary>
    private bool _reportLunsChanged;
    private IscsiPduReader _reader = null!;
    private IscsiPduWriter _writer = null!;
    private IoSlotPool<IscsiTask> _pool = null!;
    private ReactorAssignment? _assignment;
    private Reactor? _reactor;
    private FdWatch? _watch;
    private IDisposable? _polling;
    private ReactorTimer? _pingTimer;
    private bool _wantWrite;
    private bool _loggedOut;
    private bool _peerClosed;
    private bool _warnedDataSn;
    private bool _shuttingDown;
    private bool _finished;
    private long _drainDeadline;
    private int _maxSlots;
    private int _slowRunning;
    private int _inDevice;
    private uint _nextTtt = 1;
    private long _commands;
    private long _lastReceive;
    private long _pingSentAt;
    private uint _pingTag;
    private string? _initiatorPort;

    private bool HeaderDigestOn => _digestsActive && _session.HeaderDigest;

    private bool DataDigestOn => _digestsActive && _session.DataDigest;

    /// <summary>Hands the logged-in connection to the least loaded of the target's reactors; false when it closed meanwhile.</summary>
    private bool StartDataPath()
    {
        lock (_phaseLock)
        {
            if (_closed != 0 || _closing.IsCancellationRequested)
            {
                return false;
            }

            _assignment = _target.Reactors.Assign();
            _reactor = _assignment.Reactor;
        }

        try
        {
            _reactor.Post(() => Guarded(Open));
        }
        catch (ObjectDisposedException)
        {
            // The target is stopping: its reactors are gone.
            _assignment.Dispose();
            lock (_phaseLock)
            {
                _reactor = null;
            }

            return false;
        }

        return true;
    }

    /// <summary>Asks the data path to close (any thread); its task completes once it has.</summary>
    private void RequestStop()
    {
        try
        {
            _reactor!.Post(() => Guarded(BeginShutdown));
        }
        catch (ObjectDisposedException)
        {
            _dataPathDone.TrySetResult(); // the reactor stopped, and this connection with it
        }
    }

    // ---- on the reactor ----

    /// <summary>Runs work on the reactor: an exception drops this connection, never the reactor.</summary>
    private void Guarded(Action work)
    {
        try
        {
            work();
        }
        catch (Exception e)
        {
            Drop(e);
        }
    }

    private void Drop(Exception e)
    {
        switch (e)
        {
            case ProtocolException:
                IscsiLog.ProtocolError(_logger, SafePeer(), _initiatorName, e.Message);
                break;
            case IOException or SocketException or ObjectDisposedException:
                IscsiLog.ConnectionClosing(_logger, _initiatorName, e.Message);
                break;
            default:
                IscsiLog.ConnectionFailed(_logger, e, SafePeer(), _initiatorName);
                break;
        }

        try
        {
            BeginShutdown();
        }
        catch (Exception again)
        {
            IscsiLog.CloseFailed(_logger, again, _initiatorName);
            Finish(drained: false);
        }
    }

    private void Open()
    {
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
        _pool = new IoSlotPool<IscsiTask>(static () => new IscsiTask(), _maxSlots, MaxBufferedBytes, _target.Buffers);
        _tasks.EnsureCapacity(_maxSlots);
        _lunVersion = _target.LunMap.Version;
        foreach (var (lun, disk) in _target.Luns)
        {
            _paths[lun] = new IscsiLunPath(disk);
        }

        _initiatorPort = $"{_initiatorName},i,0x{_isid}"; // the initiator port's name (RFC 7143, 13.6 of SPC-4's TransportID)
        _lastReceive = Stopwatch.GetTimestamp();
        var reactor = _reactor!;
        _polling = reactor.AddPoller(this);
        _watch = reactor.Watch(_socket.SafeHandle, FdEvents.Readable, this, pollWhileBusy: true);
        _pingTimer = reactor.CreateTimer(() => Guarded(OnPingTimer));
        OnPingTimer();
        OnReady(FdEvents.Readable); // what came with the last login PDU may be waiting already
    }

    /// <summary>The socket is ready: read and handle what came, send what is waiting.</summary>
    /// <param name="events">What it is ready for.</param>
    public void OnReady(FdEvents events)
    {
        if (_shuttingDown)
        {
            return;
        }

        try
        {
            if (!_wantWrite)
            {
                Receive();
            }

            Flush();
            EndIfDone();
        }
        catch (Exception e)
        {
            Drop(e);
        }
    }

    /// <summary>Each turn: answers the commands whose requests completed, sends, and finishes a drain.</summary>
    /// <returns>Busy when it did anything.</returns>
    public PollStatus Poll()
    {
        if (_completed.Count == 0 && (_writer.IsEmpty || _wantWrite) && !_shuttingDown)
        {
            return PollStatus.Idle;
        }

        try
        {
            bool busy = _completed.Count > 0;
            AnswerCompleted();
            if (_shuttingDown)
            {
                TryFinish();
                return PollStatus.Idle;
            }

            if (!_wantWrite && !_writer.IsEmpty)
            {
                busy |= Flush();
            }

            EndIfDone();
            return busy ? PollStatus.Busy : PollStatus.Idle;
        }
        catch (Exception e)
        {
            Drop(e);
            return PollStatus.Busy;
        }
    }

    private void EndIfDone()
    {
        if ((_loggedOut && _writer.IsEmpty) || _peerClosed)
        {
            BeginShutdown();
        }
    }

    /// <summary>Pings an idle initiator, or gives up on one that did not answer; schedules the next look.</summary>
    private void OnPingTimer()
    {
        if (_shuttingDown)
        {
            TryFinish(); // a drain that waited too long gives up here
            return;
        }

        int milliseconds = Ping(Stopwatch.GetTimestamp());
        if (milliseconds >= 0)
        {
            _pingTimer!.Schedule(TimeSpan.FromMilliseconds(milliseconds));
        }
    }

    /// <summary>Pings an idle initiator, or gives up on one that did not answer; returns how long until the next look.</summary>
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
            if (_lastReceive < _pingSentAt && now >= deadline)
            {
                throw new ProtocolException($"no answer to a NOP-In in {o.NopInTimeout.TotalSeconds} s");
            }

            if (_lastReceive < _pingSentAt)
            {
                return Milliseconds(deadline - now);
            }

            _pingSentAt = 0; // anything from the initiator shows it is alive
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

    // ---- input ----

    /// <summary>Reads what the socket has and handles every whole PDU.</summary>
    private void Receive()
    {
        for (int reads = 0; reads < 4 && !_loggedOut && !_peerClosed && !_wantWrite; reads++)
        {
            HandleReceived();
            _reader.Compact();
            if (_reader.FreeBytes == 0)
            {
                break;
            }

            long n = ReceiveInto(_reader.Tail, _reader.FreeBytes);
            if (n > 0)
            {
                _reader.Advance((int)n);
                _lastReceive = Stopwatch.GetTimestamp();
                continue;
            }

            if (n == 0)
            {
                _peerClosed = true; // the initiator closed the connection
            }

            break;
        }

        HandleReceived();
    }

    /// <summary>One non-blocking receive: bytes read, 0 at the peer's end, -1 when nothing is there.</summary>
    private long ReceiveInto(byte* into, int length)
    {
        var handle = _socket.SafeHandle;
        bool added = false;
        handle.DangerousAddRef(ref added);
        try
        {
            while (true)
            {
                long n = LibC.recv((int)handle.DangerousGetHandle(), into, length, LibC.MSG_DONTWAIT);
                if (n >= 0)
                {
                    return n;
                }

                int errno = LibC.errno;
                if (errno == Errno.EINTR)
                {
                    continue;
                }

                if (errno == Errno.EAGAIN)
                {
                    return -1;
                }

                throw new IOException($"receive failed: {Errno.Describe(errno)}");
            }
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }

    /// <summary>Handles every whole PDU in the reader, while the answers have room to go.</summary>
    private void HandleReceived()
    {
        while (!_loggedOut && !_wantWrite)
        {
            switch (_reader.TryRead(out var pdu))
            {
                case PduReadStatus.Pdu:
                    Handle(pdu);
                    break;
                case PduReadStatus.DataSegmentTooLong:
                    throw new ProtocolException($"a data segment over the negotiated {_session.MaxRecvDataSegmentLength} bytes");
                case PduReadStatus.HeaderDigestError:
                    throw new ProtocolException("header digest error");
                default:
                    return;
            }
        }
    }

    /// <summary>Brings this connection's LUN paths up to the target's LUN map after LUNs were added or removed (on the
    /// connection's reactor, at the next command).</summary>
    private void SyncLunPaths()
    {
        int version = _target.LunMap.Version;
        var units = _target.LunMap.Units;
        foreach (var (lun, path) in _paths.ToList())
        {
            if (!units.TryGetValue(lun, out var disk) || disk != path.Disk)
            {
                _paths.Remove(lun);
                _retiredPaths.Add(path);
            }
        }

        foreach (var (lun, disk) in units)
        {
            _paths.TryAdd(lun, new IscsiLunPath(disk));
        }

        _lunVersion = version;
        _reportLunsChanged = true;
    }

    // ---- execution ----

    private void Dispatch(IscsiTask s)
    {
        _commands++;
        s.State = IscsiTaskState.Running;
        var task = s.Task;
        if (_reportLunsChanged && s.Path != null && task.Cdb[0] is not (ScsiOpcode.Inquiry or ScsiOpcode.ReportLuns or ScsiOpcode.RequestSense))
        {
            _reportLunsChanged = false;
            task.Fail(SenseKey.UnitAttention, 0x3F, 0x0E); // REPORTED LUNS DATA HAS CHANGED
            Complete(s);
            return;
        }

        if (_target.LunMap.TryAnswer(task, s.Path?.Disk))
        {
            Complete(s); // REPORT LUNS, or a LUN with no unit
            return;
        }

        var disk = s.Path!.Disk;
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
                r.StartTrace(); // the front-end stage: the command (and its data) parsed, to the submission
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
                _inDevice++;
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
        IscsiLog.CommandFailed(_logger, e, task.Cdb[0]);
        task.Fail(SenseKey.HardwareError, 0x44, 0); // INTERNAL TARGET FAILURE
    }

    internal void PostSlow(IscsiTask slot, Exception? error)
    {
        if (error != null)
        {
            Failed(slot.Task, error);
        }

        try
        {
            _reactor!.Post(slot); // runs RunPosted on the reactor
        }
        catch (ObjectDisposedException)
        {
            // The reactor stopped with the target: nothing is left to answer.
        }
    }

    /// <summary>A command that ran off the reactor is back (see <see cref="IscsiTask.Run"/>).</summary>
    internal void RunPosted(IscsiTask s)
    {
        try
        {
            _slowRunning--;
            Complete(s);
            if (_shuttingDown)
            {
                TryFinish();
            }
        }
        catch (Exception e)
        {
            Drop(e);
        }
    }

    private BlockQueue OpenQueue(IscsiLunPath path)
    {
        // One queue per device on this reactor, shared with the other connections here: 256 sessions do not open
        // 256 rings. Its requests are sent with the reactor's next poll of it (one system call for all of a turn's).
        var queue = _reactor!.AcquireQueue(path.Disk.Device, Math.Max(_maxSlots, 256));
        queue.BatchSubmissions = true;
        path.Queue = queue;
        return queue;
    }

    /// <summary>A request from the fast path completed (inside the reactor's poll of its queue).</summary>
    /// <param name="request">The request.</param>
    public void OnCompleted(BlockRequest request)
    {
        // Only recorded here: answering sends, and a send can fail (a peer gone, one that stopped reading), which
        // must not throw out of the queue's completion delivery. The connection's poller answers on the next turn.
        var s = (IscsiTask)request.UserState!;
        _inDevice--;
        s.Path!.Disk.CompleteFast(s.Task, request);
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
            _pool.Return(s);
            if (--abort.Pending == 0 && !_shuttingDown)
            {
                QueueTaskManagementResponse(abort.Itt, abort.Response);
            }

            return;
        }

        _tasks.Remove(s.Itt);
        if (_shuttingDown)
        {
            _pool.Return(s);
            return;
        }

        s.Request?.EndTrace(); // answered: the response goes out next
        Respond(s);
    }

    /// <summary>Sends what the socket takes; true when all the output is gone. While it waits for room, input waits too.</summary>
    private bool Flush()
    {
        if (!_writer.Flush(_socket.SafeHandle))
        {
            if (!_wantWrite)
            {
                _wantWrite = true; // read no more until the initiator takes its answers
                _watch!.Modify(FdEvents.Writable);
            }

            return false;
        }

        foreach (var s in _sent)
        {
            _pool.Return(s);
        }

        _sent.Clear();
        if (_wantWrite)
        {
            _wantWrite = false;
            _watch!.Modify(FdEvents.Readable);
        }

        return true;
    }

    // ---- shutdown ----

    /// <summary>Stops reading and sending; the connection finishes once its requests in the device are done.</summary>
    private void BeginShutdown()
    {
        if (_shuttingDown || _finished)
        {
            return;
        }

        _shuttingDown = true;
        _drainDeadline = Stopwatch.GetTimestamp() + (long)(DrainTimeout.TotalSeconds * Stopwatch.Frequency);
        _pingTimer?.Cancel();
        _watch?.Dispose();
        _watch = null;
        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
        }

        TryFinish();
        if (!_finished)
        {
            _pingTimer?.Schedule(DrainTimeout + TimeSpan.FromSeconds(1)); // looks again even if nothing wakes the reactor
        }
    }

    /// <summary>Finishes when nothing started here can still touch its buffers (or the drain has waited too long).</summary>
    private void TryFinish()
    {
        AnswerCompleted();
        bool drained = _inDevice == 0 && _slowRunning == 0;
        if (drained || Stopwatch.GetTimestamp() > _drainDeadline)
        {
            if (!drained)
            {
                IscsiLog.DrainTimedOut(_logger, _initiatorName, _inDevice + _slowRunning, DrainTimeout.TotalSeconds);
            }

            Finish(drained);
        }
    }

    private void Finish(bool drained)
    {
        if (_finished)
        {
            return;
        }

        _finished = true;
        _shuttingDown = true;
        try
        {
            _watch?.Dispose();
            _polling?.Dispose();
            foreach (var path in _paths.Values.Concat(_retiredPaths))
            {
                if (path.Queue is { } q)
                {
                    _reactor!.ReleaseQueue(q); // closed by the reactor once its last user gave it back and it is idle
                    path.Queue = null;
                }

                path.Disk.NexusLost(_nexus);
            }

            if (_pool != null)
            {
                if (drained)
                {
                    // Nothing can touch the tasks any more: those still taken (waiting for data, or answered but not
                    // yet sent) go back too, so that every buffer is freed and given back to the target's budget.
                    foreach (var t in _pool.All)
                    {
                        if (t.InUse)
                        {
                            _pool.Return(t);
                        }
                    }
                }

                // Idle tasks' buffers are freed now; a stuck device keeps those of its tasks (a leak rather than
                // corruption), freed if their completions ever come back.
                _pool.Dispose();
            }
        }
        catch (Exception e)
        {
            IscsiLog.ReleaseFailed(_logger, e, _initiatorName);
        }
        finally
        {
            _sent.Clear();
            _tasks.Clear();
            lock (_phaseLock)
            {
                _closed = 1;
            }

            _reader?.Dispose();
            _writer?.Dispose(); // what it still referenced is not sent any more

            _socket.Dispose();
            _target.Closed(this);
            _target.Account(_commands);
            _assignment?.Dispose();
            IscsiLog.ConnectionClosed(_logger, _initiatorName, _commands);
            _dataPathDone.TrySetResult();
        }
    }
}

/// <summary>Waits for a command off the data path and hands its result back to the connection's thread.</summary>
internal static class IscsiSlowCommand
{
    public static async Task AwaitAsync(ValueTask run, IscsiConnection connection, IscsiTask slot)
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
