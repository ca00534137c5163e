using System.Buffers.Binary;
using System.Diagnostics;
using System.Net.Sockets;
using System.Numerics;
using System.Runtime.InteropServices;
using Hci.Core.Blocks;
using Hci.Core.Reactors;
using Hci.Core.Replication;
using Hci.Transport.Iscsi;
using Tmds.Linux;

namespace Hci.Transport.Replication;

/// <summary>
/// One authenticated connection on a reactor of its <see cref="ReplicaServer"/>: the socket is a watched descriptor,
/// the connection a poller. Readable: receive into the <see cref="ReplicaFrameReader"/>, turn each request frame into
/// a pooled <see cref="ReplicaRequest"/> and submit it to the reactor's local channel. Answers are recorded by
/// <see cref="OnReplicaCompleted"/> and written on the connection's next look (never from inside the channel's
/// delivery), then sent with one <c>send</c> per turn. Full (every slot or the buffer budget taken, or the answers
/// not leaving): the socket is not read. Anything unexpected drops this connection, never the reactor.
/// </summary>
internal sealed unsafe class ReplicaServerConnection : IReactorMessage, IFdWatcher, IPoller, IReplicaCompletionHandler
{
    private readonly ReplicaServer _server;
    private readonly Socket _socket;
    private readonly ReplicaTlsRelay? _relay;
    private readonly string _client;
    private readonly ReactorAssignment _assignment;
    private readonly Reactor _reactor;
    private readonly TaskCompletionSource _done = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Slot[] _slots;
    private readonly int[] _free;
    private readonly int[] _completed;
    private readonly long _maxBuffered;
    private readonly long _sendTimeoutTicks;
    private int _freeCount;
    private int _completedHead;
    private int _completedCount;
    private long _buffered;
    private int _inStore;
    private ReplicaFrameReader? _reader;
    private ReplicaFrameWriter? _writer;
    private ReplicaChannel? _channel;
    private FdWatch? _watch;
    private IDisposable? _polling;
    private ReactorTimer? _timer;
    private bool _blocked;
    private bool _wantWrite;
    private bool _closing;
    private bool _finished;
    private long _stalledSince;
    private long _drainDeadline;
    private long _requests;
    private string _reason = "closed";

    public ReplicaServerConnection(ReplicaServer server, Socket socket, ReplicaTlsRelay? relay, string client, ReactorAssignment assignment)
    {
        _server = server;
        _socket = socket;
        _relay = relay;
        _client = client;
        _assignment = assignment;
        _reactor = assignment.Reactor;
        var o = server.Options;
        _slots = new Slot[o.MaxInFlightPerConnection];
        _free = new int[_slots.Length];
        _completed = new int[_slots.Length];
        _maxBuffered = o.MaxBufferedBytesPerConnection;
        _sendTimeoutTicks = (long)(o.SendTimeout.TotalSeconds * Stopwatch.Frequency);
        for (int i = 0; i < _slots.Length; i++)
        {
            _free[_freeCount++] = _slots.Length - 1 - i;
        }
    }

    /// <summary>Asks the connection to close (any thread); completes once it has.</summary>
    public Task CloseAsync()
    {
        try
        {
            _reactor.Post(() => Shutdown("the server is stopping"));
        }
        catch (ObjectDisposedException)
        {
            _done.TrySetResult();
        }

        return _done.Task;
    }

    /// <summary>On the reactor: starts serving (posted by the server once the handshake is done).</summary>
    public void Run()
    {
        try
        {
            _reader = new ReplicaFrameReader(ReplicaGeometry.MaxTransfer) { AllowedKinds = ReplicaFrameReader.KindBit(ReplicaFrameKind.Request) };
            _writer = new ReplicaFrameWriter(ReplicaGeometry.MaxTransfer);
            _channel = _server.LocalChannel(_reactor);
            _polling = _reactor.AddPoller(this);
            _watch = _reactor.Watch(_socket.SafeHandle, FdEvents.Readable, this, pollWhileBusy: true);
            _timer = _reactor.CreateTimer(OnTimer);
            OnReady(FdEvents.Readable);
        }
        catch (Exception e)
        {
            Drop(e);
        }
    }

    /// <summary>The reactor stopped before the connection could start.</summary>
    public void Abandon()
    {
        _relay?.Dispose();
        _socket.Dispose();
        _assignment.Dispose();
        _server.Closed(this);
        _done.TrySetResult();
    }

    /// <summary>The socket is ready: answer, read, send.</summary>
    public void OnReady(FdEvents events)
    {
        if (_closing)
        {
            return;
        }

        try
        {
            if ((events & (FdEvents.Error | FdEvents.HangUp)) != 0 && (events & FdEvents.Readable) == 0)
            {
                Shutdown("the peer hung up");
                return;
            }

            Answer();
            Flush();
            if (!_blocked && !_wantWrite)
            {
                Receive();
            }

            Answer();
            Flush();
            UpdateWatch();
        }
        catch (Exception e)
        {
            Drop(e);
        }
    }

    /// <summary>Each turn: answers what completed and sends.</summary>
    public PollStatus Poll()
    {
        if (_closing)
        {
            if (!_finished && _inStore == 0)
            {
                Finish();
            }

            return PollStatus.Idle;
        }

        if (_completedCount == 0 && (_writer!.IsEmpty || _wantWrite))
        {
            return PollStatus.Idle;
        }

        try
        {
            Answer();
            Flush();
            if (_blocked && !_wantWrite)
            {
                // Slots came back: take the frames that waited in the reader, and read again.
                _blocked = false;
                HandleFrames();
            }

            UpdateWatch();
        }
        catch (Exception e)
        {
            Drop(e);
        }

        return PollStatus.Busy;
    }

    /// <summary>A request came back from the local store: recorded, answered on the next look.</summary>
    public void OnReplicaCompleted(ReplicaRequest request)
    {
        var slot = (Slot)request.UserState!;
        _inStore--;
        Completed(slot);
    }

    // ---- input ----

    private void Receive()
    {
        var reader = _reader!;
        for (int reads = 0; reads < 4 && !_blocked && !_closing; reads++)
        {
            HandleFrames();
            if (_blocked || _closing)
            {
                return;
            }

            reader.Compact();
            if (reader.FreeBytes == 0)
            {
                return;
            }

            int room = reader.FreeBytes;
            long n = ReceiveInto(reader.Tail, room);
            if (n > 0)
            {
                reader.Advance((int)n);
                if (n < room)
                {
                    // A short read emptied the socket: another recv would only fail (the watch is level-triggered,
                    // so what arrives next is reported again).
                    break;
                }

                continue;
            }

            if (n == 0)
            {
                HandleFrames();
                Shutdown("the peer closed the connection");
            }

            return;
        }

        HandleFrames();
    }

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

    private void HandleFrames()
    {
        var reader = _reader!;
        while (!_blocked && !_closing)
        {
            switch (reader.TryPeek(out var frame))
            {
                case ReplicaReadStatus.NeedMore:
                    return;
                case ReplicaReadStatus.Malformed:
                    ReplicaProtocolLog.MalformedFrame(_server.Logger, _client, reader.Error);
                    Shutdown($"a malformed frame ({reader.Error})");
                    return;
            }

            if (!Accept(ref frame))
            {
                _blocked = true; // the frame stays in the reader until a slot or buffer frees up
                return;
            }

            reader.Consume(frame);
        }
    }

    /// <summary>Turns a request frame into a submitted request; false when the connection is at its limit.</summary>
    private bool Accept(ref ReplicaFrame frame)
    {
        ref var h = ref frame.Header;
        int need = h.Operation switch
        {
            ReplicaOperation.Read or ReplicaOperation.Write or ReplicaOperation.ListExtents or ReplicaOperation.GetDirtyRegions => h.Length,
            _ => 0,
        };
        if (_freeCount == 0)
        {
            return false;
        }

        var slot = Take();
        if (!Reserve(slot, need))
        {
            Give(slot);
            return false;
        }

        slot.RequestId = h.RequestId;
        var r = slot.Request;
        r.Reset();
        r.Operation = h.Operation;
        r.VolumeId = h.VolumeId;
        r.Extent = h.Extent;
        r.Offset = h.Offset;
        r.Device = h.Device;
        r.Epoch = h.Epoch;
        r.Argument = h.Argument;
        r.Flags = (h.Flags & ReplicaFrameFlags.ForceUnitAccess) != 0 ? BlockRequestFlags.ForceUnitAccess : BlockRequestFlags.None;
        r.Class = h.Class;
        r.Handler = this;
        r.UserState = slot;
        switch (h.Operation)
        {
            case ReplicaOperation.Write:
                // The payload's checksums are checked before the store sees the data: a write corrupted on the wire
                // is refused whole, and the store keeps the checksums the sender computed.
                if (!frame.DataIntact)
                {
                    ReplicaProtocolLog.BadPayload(_server.Logger, _client, h.VolumeId, h.Extent);
                    r.Status = ReplicaStatus.BadPayload;
                    Completed(slot);
                    return true;
                }

                if (h.Length > 0)
                {
                    Buffer.MemoryCopy(frame.Data, slot.Buffer, slot.BufferSize, h.Length);
                    // Little-endian on the wire and in memory (Hci runs on x64 and arm64 Linux): copied as they are.
                    Buffer.MemoryCopy(frame.Checksums, slot.Checksums, Slot.MaxChecksums * 4, 4L * ReplicaFrameHeader.ChecksumCount(h.Length));

                    r.AddSegment(slot.Buffer, h.Length);
                }

                r.Checksums = slot.Checksums;
                break;
            case ReplicaOperation.Read:
            case ReplicaOperation.ListExtents:
            case ReplicaOperation.GetDirtyRegions:
                if (h.Length > 0)
                {
                    r.AddSegment(slot.Buffer, h.Length);
                }

                r.Checksums = h.Operation == ReplicaOperation.Read ? slot.Checksums : null;
                break;
            case ReplicaOperation.ReadChecksums:
                r.Length = h.Length;
                r.Checksums = slot.Checksums;
                break;
            default:
                r.Length = h.Length;
                break;
        }

        _inStore++;
        _requests++;
        _channel!.Submit(r);
        return true;
    }

    // ---- output ----

    private void Completed(Slot slot)
    {
        _completed[(_completedHead + _completedCount) % _completed.Length] = slot.Index;
        _completedCount++;
    }

    /// <summary>Writes the answers of completed requests while the writer has room.</summary>
    private void Answer()
    {
        var writer = _writer!;
        while (_completedCount > 0)
        {
            var slot = _slots[_completed[_completedHead]];
            var r = slot.Request;
            int dataLength = 0;
            void* data = slot.Buffer;
            uint* sums = null;
            if (r.Status == ReplicaStatus.Ok)
            {
                switch (r.Operation)
                {
                    case ReplicaOperation.Read:
                        dataLength = r.Length;
                        sums = r.Allocated ? slot.Checksums : null; // the stored checksums travel end to end; zeros are summed here
                        break;
                    case ReplicaOperation.ReadChecksums:
                        dataLength = 4 * (r.Length / ReplicaGeometry.BlockSize);
                        data = slot.Checksums;
                        break;
                    case ReplicaOperation.ListExtents:
                    case ReplicaOperation.GetDirtyRegions:
                        int entry = r.Operation == ReplicaOperation.ListExtents ? 8 : 16;
                        dataLength = (int)Math.Min((long)Math.Max(r.Result, 0) * entry, r.Length / entry * entry);
                        break;
                }
            }

            if (!writer.HasRoom(dataLength))
            {
                return;
            }

            var header = new ReplicaFrameHeader
            {
                Kind = ReplicaFrameKind.Response,
                Operation = r.Operation,
                Status = r.Status,
                Flags = r.Operation == ReplicaOperation.Read && r.Allocated ? ReplicaFrameFlags.Allocated : ReplicaFrameFlags.None,
                RequestId = slot.RequestId,
                Length = dataLength,
                Epoch = r.ObservedEpoch,
                Argument = (ulong)(long)r.Result,
            };
            Span<BlockSegment> one = [new BlockSegment((nint)data, dataLength)];
            writer.TryQueue(header, dataLength > 0 ? one : [], dataLength, sums);
            _completedHead = (_completedHead + 1) % _completed.Length;
            _completedCount--;
            Give(slot);
        }
    }

    private void Flush()
    {
        var writer = _writer!;
        if (writer.Flush(_socket.SafeHandle))
        {
            _wantWrite = false;
            _stalledSince = 0;
            return;
        }

        _wantWrite = true;
        if (_stalledSince == 0)
        {
            _stalledSince = Stopwatch.GetTimestamp();
            _timer!.Schedule(_server.Options.SendTimeout);
        }
    }

    private void UpdateWatch()
    {
        if (_closing || _watch == null)
        {
            return;
        }

        var events = (_blocked ? FdEvents.None : FdEvents.Readable) | (_wantWrite ? FdEvents.Writable : FdEvents.None);
        if (_wantWrite)
        {
            events &= ~FdEvents.Readable; // while answers wait, input waits too
        }

        _watch.Modify(events);
    }

    private void OnTimer()
    {
        if (_closing)
        {
            if (!_finished && (_inStore == 0 || Stopwatch.GetTimestamp() > _drainDeadline))
            {
                Finish(); // a store that never answers keeps the buffers of its requests (a leak, not a corruption)
            }
            else if (!_finished)
            {
                _timer!.Schedule(TimeSpan.FromSeconds(1));
            }

            return;
        }

        if (_stalledSince != 0)
        {
            long waited = Stopwatch.GetTimestamp() - _stalledSince;
            if (waited >= _sendTimeoutTicks)
            {
                ReplicaProtocolLog.SendStalled(_server.Logger, _client, _server.Options.SendTimeout.TotalSeconds);
                Shutdown("the peer did not read its answers");
                return;
            }

            _timer!.Schedule(TimeSpan.FromSeconds((double)(_sendTimeoutTicks - waited) / Stopwatch.Frequency));
        }
    }

    // ---- slots ----

    private Slot Take()
    {
        int index = _free[--_freeCount];
        return _slots[index] ??= new Slot(index);
    }

    private void Give(Slot slot)
    {
        _free[_freeCount++] = slot.Index;
    }

    /// <summary>Gives the slot a buffer of at least <paramref name="need"/> bytes within the connection's budget.</summary>
    private bool Reserve(Slot slot, int need)
    {
        if (need <= slot.BufferSize)
        {
            return true;
        }

        long size = Math.Max(ReplicaGeometry.BlockSize, (long)BitOperations.RoundUpToPowerOf2((uint)need));
        long more = size - slot.BufferSize;
        if (_buffered + more > _maxBuffered)
        {
            // Idle slots give their buffers back before the connection waits.
            for (int i = 0; i < _freeCount && _buffered + more > _maxBuffered; i++)
            {
                var idle = _slots[_free[i]];
                if (idle != null && idle != slot && idle.BufferSize > 0)
                {
                    _buffered -= idle.BufferSize;
                    idle.FreeBuffer();
                }
            }

            if (_buffered + more > _maxBuffered)
            {
                return false;
            }
        }

        _buffered -= slot.BufferSize;
        slot.FreeBuffer();
        slot.Allocate((int)size);
        _buffered += size;
        return true;
    }

    // ---- shutdown ----

    private void Drop(Exception e)
    {
        if (e is IOException or SocketException or ObjectDisposedException)
        {
            Shutdown(e.Message);
            return;
        }

        ReplicaProtocolLog.ConnectionFailed(_server.Logger, e, _client);
        Shutdown(e.Message);
    }

    /// <summary>Stops reading and sending; the connection finishes once its requests in the store are back.</summary>
    private void Shutdown(string reason)
    {
        if (_closing)
        {
            return;
        }

        _closing = true;
        _reason = reason;
        _drainDeadline = Stopwatch.GetTimestamp() + (30 * Stopwatch.Frequency);
        _watch?.Dispose();
        _watch = null;
        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
        }

        if (_inStore == 0)
        {
            Finish();
        }
        else
        {
            _timer?.Schedule(TimeSpan.FromSeconds(1)); // looked at again by Poll each turn, and by this timer while idle
        }
    }

    private void Finish()
    {
        if (_finished)
        {
            return;
        }

        _finished = true;
        _timer?.Cancel();
        _polling?.Dispose();
        if (_inStore == 0)
        {
            foreach (var slot in _slots)
            {
                slot?.Dispose();
            }
        }

        _reader?.Dispose();
        _writer?.Dispose();
        _relay?.Dispose();
        _socket.Dispose();
        _server.Served(_requests);
        _server.Closed(this);
        _assignment.Dispose();
        ReplicaProtocolLog.ConnectionClosed(_server.Logger, _client, _reason, _requests);
        _done.TrySetResult();
    }

    /// <summary>One request's state: the pooled request, its data buffer (grown on demand, within the budget) and checksums.</summary>
    private sealed class Slot(int index) : IDisposable
    {
        public const int MaxChecksums = ReplicaGeometry.MaxTransfer / ReplicaGeometry.BlockSize;

        public int Index { get; } = index;

        public ReplicaRequest Request { get; } = new ReplicaRequest(1);

        public uint* Checksums { get; private set; } = (uint*)NativeMemory.AlignedAlloc(MaxChecksums * 4, 64);

        public byte* Buffer { get; private set; }

        public int BufferSize { get; private set; }

        public uint RequestId { get; set; }

        public void Allocate(int size)
        {
            Buffer = (byte*)NativeMemory.AlignedAlloc((nuint)size, ReplicaGeometry.BlockSize);
            BufferSize = size;
        }

        public void FreeBuffer()
        {
            if (Buffer != null)
            {
                NativeMemory.AlignedFree(Buffer);
                Buffer = null;
                BufferSize = 0;
            }
        }

        public void Dispose()
        {
            FreeBuffer();
            if (Checksums != null)
            {
                NativeMemory.AlignedFree(Checksums);
                Checksums = null;
            }

            Request.Dispose();
        }
    }
}
