using System.Buffers.Binary;
using System.Diagnostics;
using System.Net.Sockets;
using Hci.Core.Blocks;
using Hci.Core.Reactors;
using Hci.Core.Replication;
using Tmds.Linux;

namespace Hci.Transport.Replication;

/// <summary>
/// A <see cref="ReplicaChannel"/> to another node over the node-to-node protocol, owned by one thread. Submit encodes
/// the request into the channel's <see cref="ReplicaFrameWriter"/> (or queues it while the connection is at its
/// in-flight limit) and never calls a handler; on a reactor, a request that finds the channel idle is also sent at
/// once. <see cref="Poll"/> (or the reactor's turn: the channel is a poller and watches its socket there) sends,
/// receives, matches answers to requests by id and calls their handlers; on a reactor it reads the socket only when
/// the watch reported it readable (<see cref="PollInWait"/> reads regardless). Requests are held in a fixed slot
/// table: steady I/O allocates nothing.
/// </summary>
internal sealed unsafe class RemoteReplicaChannel : ReplicaChannel, IFdWatcher, IPoller, IReactorMessage
{
    private const int SlotBits = 16;
    private const int SlotMask = (1 << SlotBits) - 1;
    private const int EINVAL = 22;

    private readonly RemoteReplicaConnector _connector;
    private readonly RemoteReplicaConnectorOptions _options;
    private readonly string _nodeId;
    private readonly Reactor? _reactor;
    private readonly ReplicaFrameReader _reader;
    private readonly ReplicaFrameWriter _writer;
    private readonly ReplicaRequest?[] _slots;
    private readonly uint[] _ids;
    private readonly long[] _deadlines;
    private readonly int[] _free;
    private readonly long _timeoutTicks;
    private readonly long _checkTicks;
    private readonly IDisposable? _polling;
    private int _freeCount;
    private int _sent;
    private int _waiting;
    private int _answered;
    private ReplicaRequest? _waitHead;
    private ReplicaRequest? _waitTail;
    private ReplicaRequest? _doneHead;
    private ReplicaRequest? _doneTail;
    private Socket? _socket;
    private ReplicaTlsRelay? _relay;
    private FdWatch? _watch;
    private Handoff? _handoff;
    private bool _connecting;
    private bool _firstAttempt = true;
    private bool _wantWrite;
    private bool _readable = true;
    private volatile bool _disposed;
    private long _nextAttempt;
    private TimeSpan _backoff;
    private long _nextCheck;
    private uint _sequence;

    public RemoteReplicaChannel(RemoteReplicaConnector connector, string nodeId, Reactor? reactor)
    {
        _connector = connector;
        _options = connector.Options;
        _nodeId = nodeId;
        _reactor = reactor;
        int slots = _options.MaxInFlight;
        _slots = new ReplicaRequest?[slots];
        _ids = new uint[slots];
        _deadlines = new long[slots];
        _free = new int[slots];
        for (int i = 0; i < slots; i++)
        {
            _free[_freeCount++] = slots - 1 - i;
        }

        _timeoutTicks = (long)(_options.RequestTimeout.TotalSeconds * Stopwatch.Frequency);
        _checkTicks = Math.Min(_timeoutTicks / 4, Stopwatch.Frequency / 10);
        _backoff = _options.ReconnectDelay;
        _reader = new ReplicaFrameReader(ReplicaGeometry.MaxTransfer) { AllowedKinds = ReplicaFrameReader.KindBit(ReplicaFrameKind.Response) };
        _writer = new ReplicaFrameWriter(ReplicaGeometry.MaxTransfer);
        if (reactor != null)
        {
            _polling = reactor.AddPoller(this);
        }

        StartConnect();
    }

    public override string NodeId => _nodeId;

    public override bool IsConnected => _socket != null;

    public override int InFlight => _sent + _waiting + _answered;

    public override void Submit(ReplicaRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (request.Handler == null)
        {
            throw new ArgumentException("The request has no Handler to answer.", nameof(request));
        }

        request.Next = null;
        if (!IsWellFormed(request))
        {
            Answer(request, ReplicaStatus.Invalid, -EINVAL);
            return;
        }

        if (_socket == null && !(_connecting && _firstAttempt))
        {
            Answer(request, ReplicaStatus.Unavailable, 0);
            return;
        }

        // While a new channel makes its first connection, requests wait for it (a new queue's first writes must not
        // find every remote replica "unavailable"); they are answered Unavailable if that attempt fails.
        bool idle = _sent == 0 && _writer.IsEmpty && !_wantWrite;
        if (_socket != null && _waitHead == null && TrySend(request))
        {
            if (idle && _reactor != null)
            {
                // A request that finds the channel idle goes out at once: the owner submits its local write after
                // the remote ones, and that submission (a system call and a device kick) would otherwise delay the
                // send by the whole local write. With requests in flight, what a turn submits batches and leaves with
                // the turn's poll, one send for all.
                try
                {
                    Flush();
                }
                catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException)
                {
                    Lose(e.Message);
                }
            }
        }
        else
        {
            if (_waitTail == null)
            {
                _waitHead = request;
            }
            else
            {
                _waitTail.Next = request;
            }

            _waitTail = request;
            _waiting++;
        }
    }

    public override int Poll()
    {
        if (_disposed)
        {
            return 0;
        }

        int delivered = 0;
        try
        {
            Adopt();
            if (_socket != null)
            {
                // On a reactor the socket's watch says when answers arrived (OnReady); reading on every turn cost
                // one failed recv per channel per look, about ten per replicated write at QD1.
                if (_readable || _reactor == null)
                {
                    delivered += Receive();
                }

                SendWaiting();
                Flush();
                CheckTimeouts();
            }
            else if (!_connecting && Stopwatch.GetTimestamp() >= _nextAttempt)
            {
                StartConnect();
            }
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException)
        {
            Lose(e.Message);
        }

        return delivered + DeliverAnswered();
    }

    /// <summary>For a caller that holds the reactor's thread while it waits: reads the socket whatever the watch said.</summary>
    public override int PollInWait()
    {
        _readable = true;
        return Poll();
    }

    PollStatus IPoller.Poll()
    {
        bool pending = !_writer.IsEmpty;
        return Poll() > 0 || (pending && _writer.IsEmpty) ? PollStatus.Busy : PollStatus.Idle;
    }

    PollStatus IPoller.PrepareToSleep(ref int maxSleepMilliseconds)
    {
        if (_disposed)
        {
            return PollStatus.Idle;
        }

        if (_doneHead != null || _handoff != null)
        {
            return PollStatus.Busy;
        }

        long wake = long.MaxValue;
        if (_socket == null && !_connecting)
        {
            wake = _nextAttempt;
        }
        else if (_sent > 0)
        {
            wake = _nextCheck;
        }

        if (wake != long.MaxValue)
        {
            long left = wake - Stopwatch.GetTimestamp();
            int ms = left <= 0 ? 0 : (int)Math.Min((left * 1000 / Stopwatch.Frequency) + 1, int.MaxValue);
            maxSleepMilliseconds = maxSleepMilliseconds < 0 ? ms : Math.Min(maxSleepMilliseconds, ms);
        }

        return PollStatus.Idle;
    }

    public void OnReady(FdEvents events)
    {
        if (_disposed || _socket == null)
        {
            return;
        }

        try
        {
            _readable = true;
            Receive();
            Flush();
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException)
        {
            Lose(e.Message);
        }

        DeliverAnswered();
    }

    /// <summary>On the reactor: a connection attempt finished (posted by it).</summary>
    public void Run() => Poll();

    protected override void Dispose(bool disposing)
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        Close();
        FailAll();
        _polling?.Dispose();
        Interlocked.Exchange(ref _handoff, null)?.Dispose();
        DeliverAnswered(force: true);
        _reader.Dispose();
        _writer.Dispose();
    }

    // ---- sending ----

    private static bool IsWellFormed(ReplicaRequest r)
    {
        if ((byte)r.Operation is < 1 or > 10 || r.Length < 0 || r.Length > ReplicaGeometry.MaxTransfer || r.Offset < 0 || r.Extent < 0
            || r.Device is < 0 or > ushort.MaxValue || (byte)r.Class > (byte)IoClass.Background || (r.Flags & ~BlockRequestFlags.ForceUnitAccess) != 0
            || r.Offset > long.MaxValue - r.Length)
        {
            return false;
        }

        if (r.Operation is ReplicaOperation.Read or ReplicaOperation.Write or ReplicaOperation.ReadChecksums
            && ((r.Offset | (long)r.Length) & (ReplicaGeometry.BlockSize - 1)) != 0)
        {
            return false;
        }

        long total = 0;
        foreach (var s in r.Segments)
        {
            total += s.Length;
        }

        return r.Operation switch
        {
            ReplicaOperation.Read or ReplicaOperation.Write or ReplicaOperation.ListExtents or ReplicaOperation.GetDirtyRegions => total == r.Length,
            ReplicaOperation.ReadChecksums => r.Checksums != null,
            _ => true,
        };
    }

    private bool TrySend(ReplicaRequest r)
    {
        int dataLength = r.Operation == ReplicaOperation.Write ? r.Length : 0;
        if (_freeCount == 0 || !_writer.HasRoom(dataLength))
        {
            return false;
        }

        int slot = _free[--_freeCount];
        uint id = (++_sequence << SlotBits) | (uint)slot;
        var header = new ReplicaFrameHeader
        {
            Kind = ReplicaFrameKind.Request,
            Operation = r.Operation,
            Flags = (r.Flags & BlockRequestFlags.ForceUnitAccess) != 0 ? ReplicaFrameFlags.ForceUnitAccess : ReplicaFrameFlags.None,
            Class = r.Class,
            RequestId = id,
            Device = (ushort)r.Device,
            VolumeId = r.VolumeId,
            Extent = r.Extent,
            Offset = r.Offset,
            Length = r.Length,
            Epoch = r.Epoch,
            Argument = r.Operation == ReplicaOperation.MarkClean ? r.Argument : 0,
        };
        _writer.TryQueue(header, r.Segments, dataLength, dataLength > 0 ? r.Checksums : null);
        _slots[slot] = r;
        _ids[slot] = id;
        long now = Stopwatch.GetTimestamp();
        _deadlines[slot] = now + _timeoutTicks;
        if (_sent++ == 0)
        {
            _nextCheck = now + _checkTicks;
        }

        return true;
    }

    private void SendWaiting()
    {
        while (_waitHead is { } r && TrySend(r))
        {
            _waitHead = r.Next;
            if (_waitHead == null)
            {
                _waitTail = null;
            }

            r.Next = null;
            _waiting--;
        }
    }

    private void Flush()
    {
        if (_socket == null)
        {
            return;
        }

        bool all = _writer.Flush(_socket.SafeHandle);
        if (all == !_wantWrite)
        {
            return;
        }

        _wantWrite = !all;
        _watch?.Modify(_wantWrite ? FdEvents.Readable | FdEvents.Writable : FdEvents.Readable);
    }

    // ---- receiving ----

    private int Receive()
    {
        int delivered = 0;
        for (int reads = 0; reads < 8 && _socket != null && !_disposed; reads++)
        {
            _reader.Compact();
            int room = _reader.FreeBytes;
            long n = ReceiveInto(_reader.Tail, room);
            if (n < 0)
            {
                _readable = false;
                break;
            }

            if (n == 0)
            {
                Lose("the server closed the connection");
                break;
            }

            _reader.Advance((int)n);
            delivered += HandleFrames();
            if (n < room)
            {
                // A short read emptied the socket: the next recv would only fail. The watch is level-triggered, so
                // what arrives from here on is reported again.
                _readable = false;
                break;
            }
        }

        return delivered;
    }

    private long ReceiveInto(byte* into, int length)
    {
        var handle = _socket!.SafeHandle;
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

    private int HandleFrames()
    {
        int delivered = 0;
        while (_socket != null && !_disposed)
        {
            switch (_reader.TryPeek(out var frame))
            {
                case ReplicaReadStatus.NeedMore:
                    return delivered;
                case ReplicaReadStatus.Malformed:
                    Lose($"a malformed frame ({_reader.Error})");
                    return delivered;
            }

            ref var h = ref frame.Header;
            int slot = (int)(h.RequestId & SlotMask);
            var r = slot < _slots.Length ? _slots[slot] : null;
            if (r == null || _ids[slot] != h.RequestId || r.Operation != h.Operation || h.Length != ExpectedData(r, h))
            {
                Lose("an answer that matches no request in flight");
                return delivered;
            }

            var status = h.Status;
            if (h.Length > 0 && !frame.DataIntact)
            {
                ReplicaProtocolLog.ReadBadPayload(_connector.Logger, _nodeId, r.VolumeId, r.Extent);
                status = ReplicaStatus.BadPayload;
            }
            else if (h.Length > 0)
            {
                Deliver(r, ref frame);
            }

            _reader.Consume(frame);
            _slots[slot] = null;
            _free[_freeCount++] = slot;
            _sent--;
            r.Status = status;
            r.Result = (int)(long)h.Argument;
            r.ObservedEpoch = h.Epoch;
            r.Allocated = (h.Flags & ReplicaFrameFlags.Allocated) != 0;
            delivered++;
            r.Handler!.OnReplicaCompleted(r);
        }

        return delivered;
    }

    /// <summary>The data an answer to <paramref name="r"/> must carry: anything else breaks the protocol.</summary>
    private static int ExpectedData(ReplicaRequest r, in ReplicaFrameHeader h)
    {
        if (h.Status != ReplicaStatus.Ok)
        {
            return 0;
        }

        switch (r.Operation)
        {
            case ReplicaOperation.Read:
                return r.Length;
            case ReplicaOperation.ReadChecksums:
                return 4 * (r.Length / ReplicaGeometry.BlockSize);
            case ReplicaOperation.ListExtents:
            case ReplicaOperation.GetDirtyRegions:
                int entry = r.Operation == ReplicaOperation.ListExtents ? 8 : 16;
                return h.Length <= r.Length && h.Length % entry == 0 ? h.Length : -1;
            default:
                return 0;
        }
    }

    /// <summary>Copies an answer's data where the request wants it.</summary>
    private static void Deliver(ReplicaRequest r, ref ReplicaFrame frame)
    {
        int length = frame.DataLength;
        if (r.Operation == ReplicaOperation.ReadChecksums)
        {
            Buffer.MemoryCopy(frame.Data, r.Checksums, length, length);
            return;
        }

        int at = 0;
        foreach (var s in r.Segments)
        {
            if (at >= length)
            {
                break;
            }

            int n = (int)Math.Min(s.Length, length - at);
            Buffer.MemoryCopy(frame.Data + at, (void*)s.Address, n, n);
            at += n;
        }

        if (r.Operation == ReplicaOperation.Read && r.Checksums != null)
        {
            int count = ReplicaFrameHeader.ChecksumCount(length);
            for (int i = 0; i < count; i++)
            {
                r.Checksums[i] = frame.Checksum(i);
            }
        }
    }

    private void CheckTimeouts()
    {
        if (_sent == 0)
        {
            return;
        }

        long now = Stopwatch.GetTimestamp();
        if (now < _nextCheck)
        {
            return;
        }

        _nextCheck = now + _checkTicks;
        if (!Overdue(now))
        {
            return;
        }

        // Before giving up, take what the socket holds: after a stall of the reactor (a long handler, a pause) the
        // answers may be there, and the watch that would report them is looked at after the pollers in a turn.
        _readable = true;
        Receive();
        if (_socket != null && Overdue(now))
        {
            Lose($"no answer within {_options.RequestTimeout.TotalSeconds} s");
        }
    }

    private bool Overdue(long now)
    {
        for (int i = 0; i < _slots.Length; i++)
        {
            if (_slots[i] != null && _deadlines[i] <= now)
            {
                return true;
            }
        }

        return false;
    }

    // ---- answers given here ----

    private void Answer(ReplicaRequest r, ReplicaStatus status, int result)
    {
        r.Status = status;
        r.Result = result;
        r.Next = null;
        if (_doneTail == null)
        {
            _doneHead = r;
        }
        else
        {
            _doneTail.Next = r;
        }

        _doneTail = r;
        _answered++;
    }

    private int DeliverAnswered(bool force = false)
    {
        int n = 0;
        while (_doneHead is { } r && (force || !_disposed))
        {
            _doneHead = r.Next;
            if (_doneHead == null)
            {
                _doneTail = null;
            }

            r.Next = null;
            _answered--;
            n++;
            r.Handler!.OnReplicaCompleted(r);
        }

        return n;
    }

    // ---- connection ----

    private void StartConnect()
    {
        _connecting = true;
        var connector = _connector;
        string node = _nodeId;
        _ = Task.Run(() => connector.ConnectForAsync(this, node));
    }

    /// <summary>A connection attempt finished (on the thread pool): hands its result to the owner thread.</summary>
    internal void Connected(Socket? socket, ReplicaTlsRelay? relay, string? address, string? error)
    {
        Volatile.Write(ref _handoff, new Handoff(socket, relay, address, error));
        if (_disposed)
        {
            Interlocked.Exchange(ref _handoff, null)?.Dispose();
            return;
        }

        if (_reactor != null)
        {
            try
            {
                _reactor.Post(this);
            }
            catch (ObjectDisposedException)
            {
                Interlocked.Exchange(ref _handoff, null)?.Dispose();
            }
        }
    }

    /// <summary>Takes the result of a connection attempt (on the owner thread).</summary>
    private void Adopt()
    {
        if (Volatile.Read(ref _handoff) == null || Interlocked.Exchange(ref _handoff, null) is not { } h)
        {
            return;
        }

        _connecting = false;
        bool first = _firstAttempt;
        _firstAttempt = false;
        if (h.Socket == null)
        {
            if (first)
            {
                FailAll();
            }

            long delay = (long)_backoff.TotalMilliseconds;
            ReplicaProtocolLog.ConnectFailed(_connector.Logger, _nodeId, h.Error!, delay);
            Backoff();
            return;
        }

        _socket = h.Socket;
        _readable = true;
        _relay = h.Relay;
        _reader.Reset();
        _writer.Clear();
        _wantWrite = false;
        _backoff = _options.ReconnectDelay;
        if (_reactor != null)
        {
            _watch = _reactor.Watch(_socket.SafeHandle, FdEvents.Readable, this, pollWhileBusy: true);
        }

        ReplicaProtocolLog.Connected(_connector.Logger, _nodeId, h.Address!);
    }

    private void Backoff()
    {
        _nextAttempt = Stopwatch.GetTimestamp() + (long)(_backoff.TotalSeconds * Stopwatch.Frequency);
        var next = _backoff * 2;
        _backoff = next > _options.MaxReconnectDelay ? _options.MaxReconnectDelay : next;
    }

    /// <summary>The connection is gone: every request sent or waiting is answered Unavailable; a new one is made later.</summary>
    private void Lose(string reason)
    {
        if (_socket == null)
        {
            return;
        }

        int lost = _sent + _waiting;
        Close();
        FailAll();
        ReplicaProtocolLog.ConnectionLost(_connector.Logger, _nodeId, reason, lost);
        Backoff();
    }

    private void Close()
    {
        _watch?.Dispose();
        _watch = null;
        if (_socket != null)
        {
            try
            {
                _socket.Shutdown(SocketShutdown.Both);
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
            }

            _socket.Dispose();
            _socket = null;
        }

        _relay?.Dispose();
        _relay = null;
        _reader.Reset();
        _writer.Clear();
        _wantWrite = false;
    }

    private void FailAll()
    {
        for (int i = 0; i < _slots.Length; i++)
        {
            if (_slots[i] is { } r)
            {
                _slots[i] = null;
                _free[_freeCount++] = i;
                _sent--;
                Answer(r, ReplicaStatus.Unavailable, 0);
            }
        }

        while (_waitHead is { } w)
        {
            _waitHead = w.Next;
            _waiting--;
            Answer(w, ReplicaStatus.Unavailable, 0);
        }

        _waitTail = null;
    }

    private sealed class Handoff(Socket? socket, ReplicaTlsRelay? relay, string? address, string? error) : IDisposable
    {
        public Socket? Socket { get; } = socket;

        public ReplicaTlsRelay? Relay { get; } = relay;

        public string? Address { get; } = address;

        public string? Error { get; } = error;

        public void Dispose()
        {
            Relay?.Dispose();
            Socket?.Dispose();
        }
    }
}
