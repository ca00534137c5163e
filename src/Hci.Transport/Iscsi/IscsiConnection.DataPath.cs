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
    private const int MaxIovecs = 512;
    private const int MaxEvents = 8;

    // Data buffers a connection may hold at once (commands waiting for data or running, and the pool's spares):
    // an initiator cannot make the target allocate more by opening commands it never completes. The target's
    // MaxBufferedBytes bounds all connections together.
    private const long MaxBufferedBytes = 256L * 1024 * 1024;

    private readonly Lock _phaseLock = new();
    private readonly TaskCompletionSource _dataPathDone = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private const int WarmUpCommands = 1024;

    private readonly List<Slot> _free = new(64);
    private readonly List<Slot> _sent = new(64);
    private readonly List<Slot> _completed = new(64);
    private readonly Dictionary<uint, Slot> _tasks = new(64);
    private readonly Queue<Slot> _posted = new();
    private readonly Dictionary<int, LunPath> _paths = [];
    private Thread? _dataPathThread;
    private volatile bool _stopRequested;
    private int _fd = -1;
    private int _epoll = -1;
    private int _wake = -1;
    private byte* _in;
    private int _inCapacity;
    private int _inStart;
    private int _inEnd;
    private byte* _arena;
    private int _arenaCapacity;
    private int _arenaUsed;
    private iovec* _iov;
    private int _iovCount;
    private int _iovHead;
    private bool _wantWrite;
    private bool _loggedOut;
    private bool _peerClosed;
    private bool _warnedDataSn;
    private bool _shuttingDown;
    private int _slots;
    private int _maxSlots;
    private int _slowRunning;
    private long _bufferedBytes;
    private uint _nextTtt = 1;
    private long _commands;
    private long _setupAllocated;
    private long _warmAllocated = -1;
    private long _lastReceive;
    private long _pingSentAt;
    private uint _pingTag;
    private BlockQueue? _watched;
    private string? _initiatorPort;
    private Dictionary<uint, byte[]>? _held;
    private long _heldBytes;
    private bool _runningHeld;

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
        _inCapacity = Math.Max(2 * maxPdu, 256 * 1024);
        _in = (byte*)NativeMemory.AlignedAlloc((nuint)_inCapacity, 64);

        // Headers, digests and small data segments (sense, text, a ping's echo) are written here until sent.
        _arenaCapacity = (64 * 1024) + _session.MaxRecvDataSegmentLength + 64;
        _arena = (byte*)NativeMemory.AlignedAlloc((nuint)_arenaCapacity, 64);
        _iov = (iovec*)NativeMemory.Alloc((nuint)(MaxIovecs * sizeof(iovec)));
        _maxSlots = Math.Min(_target.Options.CommandWindow + 16, 1040);
        _free.Capacity = _maxSlots;
        _sent.Capacity = _maxSlots;
        _tasks.EnsureCapacity(_maxSlots);
        foreach (var (lun, disk) in _target.Luns)
        {
            _paths[lun] = new LunPath(disk);
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
            if ((_loggedOut && _iovHead == _iovCount) || _peerClosed)
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

        _pingTag = _nextTtt++;
        if (_pingTag == ReservedTag)
        {
            _pingTag = _nextTtt++;
        }

        Span<byte> pdu = stackalloc byte[IscsiHeader.Length];
        pdu.Clear();
        var p = new IscsiHeader(pdu) { Opcode = IscsiOpcode.NopIn, Final = true, Lun = 0, InitiatorTaskTag = ReservedTag };
        p.SetField(20, _pingTag);
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
            while (!_loggedOut && ParseOne())
            {
                any = true;
            }

            if (_inStart == _inEnd)
            {
                _inStart = _inEnd = 0;
            }
            else if (_inStart > 0 && _inCapacity - _inEnd < _inCapacity / 2)
            {
                Buffer.MemoryCopy(_in + _inStart, _in, _inCapacity, _inEnd - _inStart);
                _inEnd -= _inStart;
                _inStart = 0;
            }

            long n = LibC.recv(_fd, _in + _inEnd, _inCapacity - _inEnd, LibC.MSG_DONTWAIT);
            if (n > 0)
            {
                _inEnd += (int)n;
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

        while (!_loggedOut && ParseOne())
        {
            any = true;
        }

        return any;
    }

    /// <summary>Handles the next PDU when all of it is in the buffer.</summary>
    private bool ParseOne()
    {
        int available = _inEnd - _inStart;
        if (available < IscsiHeader.Length)
        {
            return false;
        }

        byte* p = _in + _inStart;
        var bhs = new Span<byte>(p, IscsiHeader.Length);
        var h = new IscsiHeader(bhs);
        int ahs = h.AdditionalHeaderLength;
        int length = h.DataSegmentLength;
        if (length > _session.MaxRecvDataSegmentLength)
        {
            throw new ProtocolException($"a data segment of {length} bytes, over the negotiated {_session.MaxRecvDataSegmentLength}");
        }

        int headerDigest = HeaderDigestOn ? IscsiDigest.Length : 0;
        int padded = (length + 3) & ~3;
        int dataDigest = DataDigestOn && length > 0 ? IscsiDigest.Length : 0;
        int total = IscsiHeader.Length + ahs + headerDigest + padded + dataDigest;
        if (available < total)
        {
            return false;
        }

        if (headerDigest != 0 && !IscsiDigest.Verify(new ReadOnlySpan<byte>(p, IscsiHeader.Length + ahs), new ReadOnlySpan<byte>(p + IscsiHeader.Length + ahs, 4)))
        {
            throw new ProtocolException("header digest error");
        }

        byte* data = p + IscsiHeader.Length + ahs + headerDigest;
        bool dataOk = dataDigest == 0 || IscsiDigest.Verify(new ReadOnlySpan<byte>(data, padded), new ReadOnlySpan<byte>(data + padded, 4));
        Handle(bhs, new Span<byte>(data, length), dataOk);
        _inStart += total;
        return true;
    }

    private void Handle(Span<byte> bhs, Span<byte> data, bool dataOk)
    {
        var h = new IscsiHeader(bhs);
        if (!dataOk)
        {
            Reject(bhs, 0x02); // data digest error: the PDU is discarded
            return;
        }

        if (_discovery && h.Opcode is not (IscsiOpcode.TextRequest or IscsiOpcode.LogoutRequest or IscsiOpcode.NopOut))
        {
            Reject(bhs, 0x05);
            return;
        }

        // Non-immediate requests run in CmdSN order (RFC 7143, 3.2.2.1): one past a gap waits for the gap to fill;
        // one below ExpCmdSN (a resend of a command already run) or past MaxCmdSN is dropped.
        if (h.Opcode is IscsiOpcode.ScsiCommand or IscsiOpcode.NopOut or IscsiOpcode.TextRequest or IscsiOpcode.TaskManagementRequest or IscsiOpcode.LogoutRequest
            && !h.Immediate && !(h.Opcode == IscsiOpcode.NopOut && h.InitiatorTaskTag == ReservedTag))
        {
            uint cmdSn = h.Field(24);
            if ((int)(cmdSn - _expCmdSn) < 0 || (int)(cmdSn - MaxCmdSn) > 0)
            {
                return;
            }

            if (cmdSn != _expCmdSn)
            {
                Hold(cmdSn, bhs, data);
                return;
            }
        }

        Run(bhs, data);
        if (_held != null && !_runningHeld)
        {
            // Requests that waited for this one run now, in order.
            _runningHeld = true;
            try
            {
                while (!_loggedOut && _held.Remove(_expCmdSn, out var next))
                {
                    _heldBytes -= next.Length;
                    Run(next.AsSpan(0, IscsiHeader.Length), next.AsSpan(IscsiHeader.Length));
                }
            }
            finally
            {
                _runningHeld = false;
            }
        }
    }

    /// <summary>Keeps a copy of a request that arrived past a CmdSN gap (rare: only an initiator in error makes one).</summary>
    private void Hold(uint cmdSn, Span<byte> bhs, Span<byte> data)
    {
        _held ??= [];
        if (_held.ContainsKey(cmdSn))
        {
            return; // a resend of one already waiting
        }

        long bytes = IscsiHeader.Length + data.Length;
        if (_heldBytes + bytes > 2L * _session.MaxRecvDataSegmentLength * 8)
        {
            throw new ProtocolException($"too many commands held past a CmdSN gap (waiting for CmdSN {_expCmdSn})");
        }

        var copy = new byte[bytes];
        bhs[..IscsiHeader.Length].CopyTo(copy);
        data.CopyTo(copy.AsSpan(IscsiHeader.Length));
        _held[cmdSn] = copy;
        _heldBytes += bytes;
    }

    private void Run(Span<byte> bhs, Span<byte> data)
    {
        var h = new IscsiHeader(bhs);
        switch (h.Opcode)
        {
            case IscsiOpcode.ScsiCommand:
                Command(bhs, data);
                break;
            case IscsiOpcode.DataOut:
                DataOut(bhs, data);
                break;
            case IscsiOpcode.NopOut:
                NopOut(bhs, data);
                break;
            case IscsiOpcode.TextRequest:
                Text(bhs, data);
                break;
            case IscsiOpcode.TaskManagementRequest:
                TaskManagement(bhs);
                break;
            case IscsiOpcode.LogoutRequest:
            {
                AcceptCmdSn(h);
                Span<byte> reply = stackalloc byte[IscsiHeader.Length];
                reply.Clear();
                _ = new IscsiHeader(reply) { Opcode = IscsiOpcode.LogoutResponse, Final = true, InitiatorTaskTag = h.InitiatorTaskTag };
                Stamp(reply);
                QueuePdu(reply, null, 0, copy: true);
                _loggedOut = true;
                break;
            }

            default:
                Reject(bhs, 0x05); // command not supported
                break;
        }
    }

    private bool AcceptCmdSn(IscsiHeader h)
    {
        if (h.Immediate)
        {
            return true;
        }

        // Outside [ExpCmdSN, MaxCmdSN] (serial arithmetic): silently ignored, as RFC 7143 says.
        uint cmdSn = h.Field(24);
        if ((int)(cmdSn - _expCmdSn) < 0 || (int)(cmdSn - MaxCmdSn) > 0)
        {
            return false;
        }

        if (cmdSn == _expCmdSn)
        {
            _expCmdSn++;
        }

        return true;
    }

    private void NopOut(Span<byte> bhs, Span<byte> data)
    {
        var h = new IscsiHeader(bhs);
        AcceptCmdSn(h);
        if (h.InitiatorTaskTag == ReservedTag)
        {
            if (h.Field(20) == _pingTag)
            {
                _pingSentAt = 0; // the answer to our ping
            }

            return;
        }

        Span<byte> reply = stackalloc byte[IscsiHeader.Length];
        reply.Clear();
        var r = new IscsiHeader(reply) { Opcode = IscsiOpcode.NopIn, Final = true, Lun = h.Lun, InitiatorTaskTag = h.InitiatorTaskTag };
        r.SetField(20, ReservedTag);
        Stamp(reply);
        int echo = Math.Min(data.Length, Math.Min(_session.MaxSendDataSegmentLength, MaxCopiedSegment));
        fixed (byte* d = data)
        {
            QueuePdu(reply, d, echo, copy: true);
        }
    }

    private void Command(Span<byte> bhs, Span<byte> data)
    {
        var h = new IscsiHeader(bhs);
        if (!AcceptCmdSn(h))
        {
            return;
        }

        uint itt = h.InitiatorTaskTag;
        bool read = (h.Flags & 0x40) != 0;
        bool write = (h.Flags & 0x20) != 0;
        int expected = (int)Math.Min(h.Field(20), int.MaxValue);
        int lun = ScsiLunMap.Decode(h.Lun);
        LunPath? path = lun >= 0 ? _paths.GetValueOrDefault(lun) : null;
        int maxTransfer = Math.Max(path != null ? path.Disk.MaxTransferBytes * 2 : 0, 1 << 20); // * 2: COMPARE AND WRITE
        if ((read && write) || expected > maxTransfer || (write && data.Length > expected) || (!write && data.Length > 0))
        {
            QueueStatus(itt, ScsiStatus.CheckCondition, SenseKey.IllegalRequest, 0x24); // INVALID FIELD IN CDB
            return;
        }

        // A command that takes data must come with the W bit: without it, it would write (and answer with) whatever
        // the command buffer held before. A READ marked as a write is served with no Data-In, as other targets do
        // (libiscsi's Read10Invalid expects GOOD), so it leaks nothing.
        if (expected > 0 && !write && ScsiDisk.DirectionOf(bhs.Slice(32, 16)) == ScsiDataDirection.Out)
        {
            QueueStatus(itt, ScsiStatus.CheckCondition, SenseKey.IllegalRequest, 0x24);
            return;
        }

        var s = TakeSlot(expected);
        if (s == null)
        {
            QueueStatus(itt, ScsiStatus.TaskSetFull);
            return;
        }

        if (!_tasks.TryAdd(itt, s))
        {
            // A task tag still in use: a protocol error (RFC 7143, 11.2.1.8).
            Release(s);
            Reject(bhs, 0x04);
            return;
        }

        s.LunField = h.Lun;
        s.Itt = itt;
        s.Lun = lun;
        s.Path = path;
        var task = s.Task;
        task.Reset();
        bhs.Slice(32, 16).CopyTo(task.Cdb);
        task.ExpectedLength = expected;
        task.DataOut = write;
        task.Nexus = _nexus;
        task.InitiatorPort = _initiatorPort;
        task.Buffer = expected > 0 ? s.Buffer : null;
        if (write && expected > 0)
        {
            data.CopyTo(s.Buffer!.Span);
            s.Received = data.Length;
            s.NextDataSn = 0;
            s.SequenceError = false;
            s.NextR2TEnd = 0;
            s.R2TSn = 0;
            s.UnsolicitedEnd = (h.Flags & 0x80) != 0 ? data.Length : _session.InitialR2T ? data.Length : Math.Min(expected, _session.FirstBurstLength);
            if (s.Received < expected)
            {
                s.State = SlotState.AwaitingData;
                if (s.Received >= s.UnsolicitedEnd)
                {
                    SendR2T(s);
                }

                return;
            }
        }

        Dispatch(s);
    }

    private void DataOut(Span<byte> bhs, Span<byte> data)
    {
        var h = new IscsiHeader(bhs);
        if (!_tasks.TryGetValue(h.InitiatorTaskTag, out var s) || s.State != SlotState.AwaitingData)
        {
            Reject(bhs, 0x09); // invalid PDU field: no such task takes data
            return;
        }

        uint offset = h.Field(40);
        int expected = s.Task.ExpectedLength;
        if (offset > (uint)expected || data.Length > expected - (int)offset)
        {
            Reject(bhs, 0x09);
            return;
        }

        // Data PDUs come in order (DataPDUInOrder and DataSequenceInOrder are Yes): each carries the next DataSN
        // and starts where the last ended, so what was received is exactly the first Received bytes. At
        // ErrorRecoveryLevel 0 a gap or a repeat cannot be repaired: the command ends with CHECK CONDITION once its
        // data is in, and the session goes on.
        uint dataSn = h.Field(36);
        if ((dataSn != s.NextDataSn || (_session.DataPduInOrder && offset != (uint)s.Received)) && !s.SequenceError)
        {
            // Warned once per connection: an initiator must not be able to flood the log.
            _logger.Log(_warnedDataSn ? LogLevel.Debug : LogLevel.Warning, "iSCSI {Initiator}: Data-Out DataSN {DataSn} at offset {Offset} for task {Itt:x}, expected {Expected} at {Received}; the command fails.", _initiatorName, dataSn, offset, s.Itt, s.NextDataSn, s.Received);
            _warnedDataSn = true;
            s.SequenceError = true;
        }

        s.NextDataSn++;
        data.CopyTo(s.Buffer!.Span[(int)offset..]);
        s.Received += data.Length;
        if (s.Received >= expected)
        {
            if (s.SequenceError)
            {
                _commands++;
                s.State = SlotState.Running;
                s.Task.Fail(SenseKey.AbortedCommand, 0x4B, 0x00); // DATA PHASE ERROR
                Complete(s);
                return;
            }

            Dispatch(s);
            return;
        }

        if (h.Final && s.Received >= s.NextR2TEnd)
        {
            SendR2T(s);
        }
    }

    private void SendR2T(Slot s)
    {
        int offset = Math.Max(s.Received, s.NextR2TEnd);
        int size = Math.Min(_session.MaxBurstLength, s.Task.ExpectedLength - offset);
        if (size <= 0)
        {
            return;
        }

        s.NextR2TEnd = offset + size;
        s.NextDataSn = 0; // each R2T starts a new data sequence
        Span<byte> pdu = stackalloc byte[IscsiHeader.Length];
        pdu.Clear();
        var r = new IscsiHeader(pdu) { Opcode = IscsiOpcode.ReadyToTransfer, Final = true, Lun = s.LunField, InitiatorTaskTag = s.Itt };
        uint ttt = _nextTtt++;
        r.SetField(20, ttt == ReservedTag ? _nextTtt++ : ttt);
        Stamp(pdu, advance: false);
        r.SetField(36, (uint)s.R2TSn++);
        r.SetField(40, (uint)offset);
        r.SetField(44, (uint)size);
        QueuePdu(pdu, null, 0, copy: true);
    }

    // ---- execution ----

    private void Dispatch(Slot s)
    {
        if (++_commands == WarmUpCommands)
        {
            _warmAllocated = GC.GetAllocatedBytesForCurrentThread() - _setupAllocated;
        }

        s.State = SlotState.Running;
        var task = s.Task;
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
        var s = (Slot)slot;
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
            Slot? s;
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

    private BlockQueue OpenQueue(LunPath path)
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
        var s = (Slot)request.UserState!;
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

    private void Complete(Slot s)
    {
        if (s.Abort is { } abort)
        {
            s.Abort = null;
            Release(s);
            if (--abort.Pending == 0 && !_shuttingDown)
            {
                QueueTmfResponse(abort.Itt, abort.Response);
            }

            return;
        }

        _tasks.Remove(s.Itt);
        if (_shuttingDown)
        {
            Release(s);
            return;
        }

        Respond(s);
    }

    // ---- task management ----

    private void TaskManagement(Span<byte> bhs)
    {
        var h = new IscsiHeader(bhs);
        AcceptCmdSn(h);
        int function = bhs[1] & 0x7F;
        int lun = ScsiLunMap.Decode(h.Lun);
        var wait = new TmfWait(h.InitiatorTaskTag);
        switch (function)
        {
            case 1: // ABORT TASK: done once the task is; "does not exist" when it has been answered already
                if (_tasks.TryGetValue(h.Field(20), out var task))
                {
                    Abort(task, wait);
                }
                else
                {
                    wait.Response = 1;
                }

                break;
            case 2 or 3: // ABORT TASK SET, CLEAR TASK SET: this session's tasks on that LUN
                AbortAll(wait, lun);
                break;
            case 4: // CLEAR ACA: no ACA is ever established (NACA is refused)
                break;
            case 5: // LOGICAL UNIT RESET
                if (lun < 0 || !_paths.TryGetValue(lun, out var path))
                {
                    wait.Response = 2; // LUN does not exist
                    break;
                }

                AbortAll(wait, lun);
                path.Disk.Reset();
                break;
            case 6: // TARGET WARM RESET
                AbortAll(wait, -1);
                foreach (var p in _paths.Values)
                {
                    p.Disk.Reset();
                }

                break;
            case 7 or 8: // TARGET COLD RESET, TASK REASSIGN: not supported at ErrorRecoveryLevel 0
                wait.Response = 5;
                break;
            default:
                wait.Response = 255; // function rejected
                break;
        }

        if (wait.Pending == 0)
        {
            QueueTmfResponse(wait.Itt, wait.Response);
        }
    }

    private void AbortAll(TmfWait wait, int lun)
    {
        Slot[] affected = [.. _tasks.Values.Where(s => lun < 0 || s.Lun == lun)];
        foreach (var s in affected)
        {
            Abort(s, wait);
        }
    }

    private void Abort(Slot s, TmfWait wait)
    {
        _tasks.Remove(s.Itt);
        if (s.State == SlotState.AwaitingData)
        {
            Release(s); // no I/O started: it simply ends
            return;
        }

        // Running: its answer is dropped, and the TMF answered once it has finished.
        s.Abort = wait;
        wait.Pending++;
    }

    private void QueueTmfResponse(uint itt, byte response)
    {
        Span<byte> reply = stackalloc byte[IscsiHeader.Length];
        reply.Clear();
        _ = new IscsiHeader(reply) { Opcode = IscsiOpcode.TaskManagementResponse, Final = true, InitiatorTaskTag = itt };
        reply[2] = response;
        Stamp(reply);
        QueuePdu(reply, null, 0, copy: true);
    }

    // ---- text, reject ----

    private void Text(Span<byte> bhs, Span<byte> data)
    {
        var h = new IscsiHeader(bhs);
        AcceptCmdSn(h);
        var pairs = new List<KeyValuePair<string, string>>();
        var response = new List<KeyValuePair<string, string>>();
        if (IscsiText.Parse(data, pairs) != IscsiTextError.None)
        {
            Reject(bhs, 0x04);
            return;
        }

        foreach (var (key, value) in pairs)
        {
            if (key == "SendTargets")
            {
                if (value is "All" or "" || value == _target.Options.TargetName)
                {
                    response.Add(new("TargetName", _target.Options.TargetName));
                    var ep = _target.LocalEndPoint;
                    var local = (System.Net.IPEndPoint?)_socket.LocalEndPoint;
                    var address = local?.Address ?? ep.Address;
                    if (address.IsIPv4MappedToIPv6)
                    {
                        address = address.MapToIPv4();
                    }

                    string host = address.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{address}]" : address.ToString();
                    response.Add(new("TargetAddress", $"{host}:{ep.Port},1"));
                }
            }
            else if (key == "MaxRecvDataSegmentLength")
            {
                // The one operational key the full feature phase may renegotiate (RFC 7143, 13.12): the initiator's
                // declaration; what this side sends stays within its output arena.
                IscsiNegotiation.Respond([new(key, value)], _limits, _session, response);
                _session.MaxSendDataSegmentLength = Math.Min(_session.MaxSendDataSegmentLength, MaxCopiedSegment);
            }
            else
            {
                // Login-only keys (digests, burst lengths, names, CHAP ...) and anything unknown cannot change now.
                response.Add(new(key, IscsiNegotiation.LoginKeys.Contains(key) || IsOperational(key) ? "Reject" : "NotUnderstood"));
            }
        }

        Span<byte> reply = stackalloc byte[IscsiHeader.Length];
        reply.Clear();
        var r = new IscsiHeader(reply) { Opcode = IscsiOpcode.TextResponse, Final = true, Lun = h.Lun, InitiatorTaskTag = h.InitiatorTaskTag };
        r.SetField(20, ReservedTag);
        Stamp(reply);
        byte[] body = IscsiText.Format(response);
        fixed (byte* b = body)
        {
            QueuePdu(reply, b, Math.Min(body.Length, Math.Min(_session.MaxSendDataSegmentLength, MaxCopiedSegment)), copy: true);
        }
    }

    private static bool IsOperational(string key) => key is "HeaderDigest" or "DataDigest" or "MaxConnections" or "InitialR2T" or "ImmediateData"
        or "MaxBurstLength" or "FirstBurstLength" or "DefaultTime2Wait" or "DefaultTime2Retain" or "MaxOutstandingR2T" or "DataPDUInOrder"
        or "DataSequenceInOrder" or "ErrorRecoveryLevel" or "IFMarker" or "OFMarker" or "IFMarkInt" or "OFMarkInt";

    // The largest data segment copied into the output arena (text, a ping's echo, sense), with room for the header,
    // digests and padding.
    private int MaxCopiedSegment => _arenaCapacity - IscsiHeader.Length - 16;

    private void Reject(Span<byte> offending, byte reason)
    {
        Span<byte> reply = stackalloc byte[IscsiHeader.Length];
        reply.Clear();
        _ = new IscsiHeader(reply) { Opcode = IscsiOpcode.Reject, Final = true, InitiatorTaskTag = ReservedTag };
        reply[2] = reason;
        Stamp(reply);
        fixed (byte* o = offending)
        {
            QueuePdu(reply, o, IscsiHeader.Length, copy: true);
        }
    }

    // ---- answers ----

    private void Respond(Slot s)
    {
        var task = s.Task;
        uint itt = s.Itt;
        int expected = task.ExpectedLength;
        int dataIn = task.DataOut ? 0 : Math.Min(task.DataLength, expected);
        int wanted = task.DataOut ? (task.DataLength > 0 ? task.DataLength : expected) : task.DataLength;
        uint residual = (uint)Math.Abs((long)wanted - expected);
        byte residualFlag = wanted < expected ? (byte)0x02 : wanted > expected ? (byte)0x04 : (byte)0;
        bool good = task.Status == ScsiStatus.Good;
        s.State = SlotState.Sending;
        if (dataIn > 0 && task.Buffer != null)
        {
            dataIn = Math.Min(dataIn, task.Buffer.Length);
            int max = _session.MaxSendDataSegmentLength;
            uint dataSn = 0;
            Span<byte> pdu = stackalloc byte[IscsiHeader.Length];
            for (int offset = 0; offset < dataIn; offset += max)
            {
                int n = Math.Min(max, dataIn - offset);
                bool last = offset + n >= dataIn;
                pdu.Clear();
                var p = new IscsiHeader(pdu) { Opcode = IscsiOpcode.DataIn, Lun = s.LunField, InitiatorTaskTag = itt };
                p.SetField(20, ReservedTag);
                if (last && good)
                {
                    pdu[1] = (byte)(0x80 | 0x01 | residualFlag); // final, with the status
                    pdu[3] = task.Status;
                    Stamp(pdu);
                    p.SetField(44, residual);
                }
                else
                {
                    pdu[1] = last ? (byte)0x80 : (byte)0;
                    Stamp(pdu, advance: false);
                }

                p.SetField(36, dataSn++);
                p.SetField(40, (uint)offset);
                QueuePdu(pdu, task.Buffer.Pointer + offset, n, copy: false);
            }

            if (good)
            {
                // Its buffer is in the output until the output is sent. Only now: a flush while its PDUs were
                // being queued must not free the slot before its last PDU is out.
                _sent.Add(s);
                return;
            }
        }

        var sense = task.Sense;
        QueueResponse(itt, task.Status, residualFlag, residual, sense);
        _sent.Add(s);
    }

    /// <summary>Answers a command refused before it got a slot: a status, and sense for CHECK CONDITION.</summary>
    private void QueueStatus(uint itt, byte status, byte key = 0, byte asc = 0)
    {
        Span<byte> sense = stackalloc byte[18];
        ScsiTask.WriteSense(sense, key, asc, 0);
        QueueResponse(itt, status, 0, 0, status == ScsiStatus.CheckCondition ? sense : default);
    }

    private void QueueResponse(uint itt, byte status, byte residualFlag, uint residual, ReadOnlySpan<byte> sense)
    {
        Span<byte> reply = stackalloc byte[IscsiHeader.Length];
        reply.Clear();
        var r = new IscsiHeader(reply) { Opcode = IscsiOpcode.ScsiResponse, InitiatorTaskTag = itt };
        reply[1] = (byte)(0x80 | residualFlag);
        reply[3] = status;
        Stamp(reply);
        r.SetField(44, residual);
        if (sense.IsEmpty)
        {
            QueuePdu(reply, null, 0, copy: true);
            return;
        }

        // Sense data: its length (2 bytes), then the sense (RFC 7143, 11.4.7).
        Span<byte> segment = stackalloc byte[2 + sense.Length];
        BinaryPrimitives.WriteUInt16BigEndian(segment, (ushort)sense.Length);
        sense.CopyTo(segment[2..]);
        fixed (byte* d = segment)
        {
            QueuePdu(reply, d, segment.Length, copy: true);
        }
    }

    /// <summary>Fills StatSN, ExpCmdSN and MaxCmdSN; a response that carries a status takes the next StatSN.</summary>
    private void Stamp(Span<byte> header, bool advance = true)
    {
        var h = new IscsiHeader(header);
        h.SetField(24, advance ? _statSn++ : _statSn);
        h.SetField(28, _expCmdSn);
        h.SetField(32, MaxCmdSn);
    }

    /// <summary>
    /// Adds one PDU to the output: the header (and its digest) in the arena; the data copied into the arena, or
    /// referenced where it lies (a command's buffer, which then stays untouched until the output is sent).
    /// </summary>
    private void QueuePdu(ReadOnlySpan<byte> header, byte* data, int length, bool copy)
    {
        int padded = (length + 3) & ~3;
        bool headerDigest = HeaderDigestOn;
        bool dataDigest = DataDigestOn && length > 0;
        int need = IscsiHeader.Length + 4 + (copy ? padded : 4) + 4;
        if (_arenaUsed + need > _arenaCapacity || _iovCount + 3 > MaxIovecs)
        {
            FlushAll();
        }

        if (need > _arenaCapacity)
        {
            // Never written past the arena (callers bound what they copy; this is the last line).
            throw new ProtocolException($"an answer of {length} bytes does not fit the output buffer");
        }

        int start = _arenaUsed;
        byte* h = _arena + _arenaUsed;
        header[..IscsiHeader.Length].CopyTo(new Span<byte>(h, IscsiHeader.Length));
        h[4] = 0; // TotalAHSLength: none on answers
        h[5] = (byte)(length >> 16);
        h[6] = (byte)(length >> 8);
        h[7] = (byte)length;
        _arenaUsed += IscsiHeader.Length;
        if (headerDigest)
        {
            IscsiDigest.Write(IscsiDigest.Compute(new ReadOnlySpan<byte>(h, IscsiHeader.Length)), new Span<byte>(_arena + _arenaUsed, 4));
            _arenaUsed += 4;
        }

        if (length > 0)
        {
            if (copy)
            {
                Buffer.MemoryCopy(data, _arena + _arenaUsed, _arenaCapacity - _arenaUsed, length);
            }
            else
            {
                AddIovec(_arena + start, _arenaUsed - start);
                AddIovec(data, length);
                start = _arenaUsed;
            }

            byte* pad = _arena + _arenaUsed + (copy ? length : 0);
            for (int i = length; i < padded; i++)
            {
                *pad++ = 0;
            }

            _arenaUsed += copy ? padded : padded - length;
            if (dataDigest)
            {
                uint crc = IscsiDigest.Append(0xFFFFFFFFu, new ReadOnlySpan<byte>(data, length));
                crc = IscsiDigest.Append(crc, new ReadOnlySpan<byte>(pad - (padded - length), padded - length));
                IscsiDigest.Write(~crc, new Span<byte>(_arena + _arenaUsed, 4));
                _arenaUsed += 4;
            }
        }

        AddIovec(_arena + start, _arenaUsed - start);
    }

    private void AddIovec(byte* at, int length)
    {
        if (length == 0)
        {
            return;
        }

        if (_iovCount > _iovHead)
        {
            ref var last = ref _iov[_iovCount - 1];
            if ((byte*)last.iov_base + (int)last.iov_len == at)
            {
                last.iov_len = (int)last.iov_len + length;
                return;
            }
        }

        _iov[_iovCount].iov_base = at;
        _iov[_iovCount].iov_len = length;
        _iovCount++;
    }

    /// <summary>Sends what the socket takes; true when all the output is gone.</summary>
    private bool Flush()
    {
        while (_iovHead < _iovCount)
        {
            msghdr msg = default;
            msg.msg_iov = _iov + _iovHead;
            msg.msg_iovlen = _iovCount - _iovHead;
            long n = LibC.sendmsg(_fd, &msg, LibC.MSG_DONTWAIT | LibC.MSG_NOSIGNAL);
            if (n < 0)
            {
                int errno = LibC.errno;
                if (errno == Errno.EINTR)
                {
                    continue;
                }

                if (errno == Errno.EAGAIN)
                {
                    if (!_wantWrite)
                    {
                        _wantWrite = true;
                        Watch(_fd, LibC.EPOLLIN | LibC.EPOLLOUT, LibC.EPOLL_CTL_MOD);
                    }

                    return false;
                }

                throw new IOException($"send failed: {Errno.Describe(errno)}");
            }

            while (n > 0)
            {
                ref var v = ref _iov[_iovHead];
                int have = (int)v.iov_len;
                if (n >= have)
                {
                    n -= have;
                    _iovHead++;
                }
                else
                {
                    v.iov_base = (byte*)v.iov_base + n;
                    v.iov_len = have - (int)n;
                    n = 0;
                }
            }
        }

        _iovHead = _iovCount = 0;
        _arenaUsed = 0;
        foreach (var s in _sent)
        {
            Release(s);
        }

        _sent.Clear();
        if (_wantWrite)
        {
            _wantWrite = false;
            Watch(_fd, LibC.EPOLLIN, LibC.EPOLL_CTL_MOD);
        }

        return true;
    }

    /// <summary>Sends all of the output, waiting for the initiator to take it (bounded).</summary>
    private void FlushAll()
    {
        long deadline = Stopwatch.GetTimestamp() + (30 * Stopwatch.Frequency);
        while (!Flush())
        {
            if (Stopwatch.GetTimestamp() > deadline)
            {
                throw new ProtocolException("the initiator has not read its answers for 30 s");
            }

            pollfd p = default;
            p.fd = _fd;
            p.events = LibC.POLLOUT;
            LibC.poll(&p, 1, 1000);
        }
    }

    // ---- slots ----

    private Slot? TakeSlot(int bytes)
    {
        // The most recently freed slot whose buffer is big enough, among the last few freed; else a new slot
        // while under the limit; else the last freed, its buffer grown.
        Slot? s = null;
        int end = _free.Count - 1;
        for (int i = end; i >= 0 && i >= end - 8; i--)
        {
            if (_free[i].Capacity >= bytes)
            {
                s = _free[i];
                _free[i] = _free[end];
                _free.RemoveAt(end);
                break;
            }
        }

        if (s == null && _slots < _maxSlots)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            s = new Slot();
            _slots++;
            _setupAllocated += GC.GetAllocatedBytesForCurrentThread() - before;
        }
        else if (s == null && end >= 0)
        {
            s = _free[end];
            _free.RemoveAt(end);
        }

        if (s == null)
        {
            return null;
        }

        if (bytes > s.Capacity && !Grow(s, bytes))
        {
            _free.Add(s);
            return null;
        }

        s.Abort = null;
        return s;
    }

    private bool Grow(Slot s, int bytes)
    {
        int size = (int)Math.Min(Math.Max(4096, System.Numerics.BitOperations.RoundUpToPowerOf2((uint)bytes)), int.MaxValue - 4095);
        size = Math.Max(size, (bytes + 4095) & ~4095);
        long more = size - s.Capacity;
        if (!ReserveBuffers(more))
        {
            // Give back the spare buffers of idle slots first.
            foreach (var idle in _free)
            {
                if (idle != s && idle.Buffer != null)
                {
                    UnreserveBuffers(idle.Capacity);
                    ((IDisposable)idle.Buffer).Dispose();
                    idle.Buffer = null;
                }
            }

            if (!ReserveBuffers(more))
            {
                return false; // over this connection's or the target's budget: TASK SET FULL
            }
        }

        long before = GC.GetAllocatedBytesForCurrentThread();
        if (s.Buffer != null)
        {
            ((IDisposable)s.Buffer).Dispose();
        }

        s.Buffer = new AlignedBuffer(size);
        _setupAllocated += GC.GetAllocatedBytesForCurrentThread() - before;
        return true;
    }

    /// <summary>Counts buffer bytes against this connection's budget and the target's; false when either is spent.</summary>
    private bool ReserveBuffers(long bytes)
    {
        if (_bufferedBytes + bytes > MaxBufferedBytes || !_target.TryReserveBuffers(bytes))
        {
            return false;
        }

        _bufferedBytes += bytes;
        return true;
    }

    private void UnreserveBuffers(long bytes)
    {
        _bufferedBytes -= bytes;
        _target.ReleaseBuffers(bytes);
    }

    private void Release(Slot s)
    {
        s.State = SlotState.Idle;
        s.Path = null;
        s.Task.Buffer = null;
        _free.Add(s);
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
            foreach (var s in _free.Concat(_sent).Concat(_tasks.Values))
            {
                if (s.Buffer != null)
                {
                    UnreserveBuffers(s.Capacity);
                    ((IDisposable)s.Buffer).Dispose();
                    s.Buffer = null;
                }
            }
        }

        _free.Clear();
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

        NativeMemory.AlignedFree(_in);
        NativeMemory.AlignedFree(_arena);
        NativeMemory.Free(_iov);
        _in = _arena = null;
        _iov = null;
        _socket.Dispose();
        _target.Closed(this);
    }

    private enum SlotState
    {
        Idle,
        AwaitingData,
        Running,
        Sending,
    }

    /// <summary>One command's state, reused from command to command.</summary>
    private sealed class Slot
    {
        public ScsiTask Task { get; } = new();

        public BlockRequest Request { get; } = new();

        /// <summary>The command's LUN field as it came, echoed in its R2Ts and Data-In.</summary>
        public ulong LunField { get; set; }

        public AlignedBuffer? Buffer { get; set; }

        public int Capacity => Buffer?.Length ?? 0;

        public LunPath? Path { get; set; }

        public int Lun { get; set; }

        public uint Itt { get; set; }

        public SlotState State { get; set; }

        public int Received { get; set; }

        public int UnsolicitedEnd { get; set; }

        public int NextR2TEnd { get; set; }

        public int R2TSn { get; set; }

        public uint NextDataSn { get; set; }

        public bool SequenceError { get; set; }

        public TmfWait? Abort { get; set; }
    }

    /// <summary>A LUN as one connection reaches it: the unit and this connection's queue on its device.</summary>
    private sealed class LunPath(ScsiDisk disk)
    {
        public ScsiDisk Disk { get; } = disk;

        public BlockQueue? Queue { get; set; }
    }

    /// <summary>A task management function waiting for the tasks it aborted to finish.</summary>
    private sealed class TmfWait(uint itt)
    {
        public uint Itt { get; } = itt;

        public byte Response { get; set; }

        public int Pending { get; set; }
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
