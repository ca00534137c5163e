using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Hci.Core.Replication;
using Hci.Transport.Iscsi;
using Hci.Core.Blocks;
using Tmds.Linux;

namespace Hci.Transport.Replication;

/// <summary>
/// Gathers outgoing frames in one native buffer until they are sent: header, data (copied) and checksums, each frame
/// whole. <see cref="Flush"/> sends what the socket takes with non-blocking <c>send</c>; <see cref="Drain"/> takes the
/// bytes without a socket (the handshake over a stream, tests). A full buffer refuses the frame (the caller waits
/// for room: backpressure, never growth). Writing allocates nothing.
/// </summary>
internal sealed unsafe class ReplicaFrameWriter : IDisposable
{
    private byte* _buffer;
    private readonly int _capacity;
    private int _start;
    private int _end;

    /// <summary>Creates a writer.</summary>
    /// <param name="maxDataLength">The most data one frame carries; the buffer holds two such frames.</param>
    public ReplicaFrameWriter(int maxDataLength)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxDataLength);
        _capacity = checked((int)(2 * (ReplicaFrameHeader.Size + ReplicaFrameHeader.PayloadLength(maxDataLength))));
        _buffer = (byte*)NativeMemory.AlignedAlloc((nuint)_capacity, 64);
    }

    /// <summary>Bytes queued and not yet sent.</summary>
    public int Pending => _end - _start;

    /// <summary>True when everything queued has been sent.</summary>
    public bool IsEmpty => _end == _start;

    /// <summary>Whether a frame with <paramref name="dataLength"/> bytes of data fits now.</summary>
    public bool HasRoom(int dataLength)
    {
        long need = ReplicaFrameHeader.Size + ReplicaFrameHeader.PayloadLength(dataLength);
        return need <= _capacity - _end || need <= _capacity - (_end - _start);
    }

    /// <summary>
    /// Queues a frame: the header (written with its CRC), then <paramref name="dataLength"/> bytes gathered from
    /// <paramref name="segments"/> and one CRC-32C per 4 KiB block (copied from <paramref name="checksums"/> when
    /// given, computed otherwise).
    /// </summary>
    /// <returns>False when there is no room now (nothing was queued).</returns>
    public bool TryQueue(in ReplicaFrameHeader header, ReadOnlySpan<Hci.Core.Blocks.BlockSegment> segments, int dataLength, uint* checksums)
    {
        if (!HasRoom(dataLength))
        {
            return false;
        }

        MakeRoom(dataLength);
        byte* p = _buffer + _end;
        header.Write(new Span<byte>(p, ReplicaFrameHeader.Size));
        byte* data = p + ReplicaFrameHeader.Size;
        int copied = 0;
        for (int i = 0; i < segments.Length && copied < dataLength; i++)
        {
            int n = (int)Math.Min(segments[i].Length, dataLength - copied);
            Buffer.MemoryCopy((void*)segments[i].Address, data + copied, n, n);
            copied += n;
        }

        if (copied < dataLength)
        {
            new Span<byte>(data + copied, dataLength - copied).Clear();
        }

        byte* sums = data + dataLength;
        int count = ReplicaFrameHeader.ChecksumCount(dataLength);
        for (int i = 0; i < count; i++)
        {
            uint crc = checksums != null
                ? checksums[i]
                : IscsiDigest.Compute(new ReadOnlySpan<byte>(data + ((long)i * ReplicaGeometry.BlockSize), Math.Min(ReplicaGeometry.BlockSize, dataLength - (i * ReplicaGeometry.BlockSize))));
            BinaryPrimitives.WriteUInt32LittleEndian(new Span<byte>(sums + (4 * i), 4), crc);
        }

        _end += ReplicaFrameHeader.Size + dataLength + (4 * count);
        return true;
    }

    /// <summary>Queues a frame whose data is one span (handshake frames, list answers).</summary>
    public bool TryQueue(in ReplicaFrameHeader header, ReadOnlySpan<byte> data)
    {
        fixed (byte* d = data)
        {
            Span<Hci.Core.Blocks.BlockSegment> one = [new Hci.Core.Blocks.BlockSegment((nint)d, data.Length)];
            return TryQueue(header, data.Length == 0 ? [] : one, data.Length, null);
        }
    }

    /// <summary>Sends what the socket takes now, without waiting.</summary>
    /// <param name="socket">A connected stream socket.</param>
    /// <returns>True when everything is sent; false when the socket is full (wait until it is writable).</returns>
    /// <exception cref="IOException">The send failed (the peer is gone).</exception>
    public bool Flush(SafeHandle socket)
    {
        if (IsEmpty)
        {
            return true;
        }

        bool added = false;
        socket.DangerousAddRef(ref added);
        try
        {
            int fd = (int)socket.DangerousGetHandle();
            while (_start < _end)
            {
                long n = LibC.send(fd, _buffer + _start, _end - _start, LibC.MSG_DONTWAIT | LibC.MSG_NOSIGNAL);
                if (n < 0)
                {
                    int errno = LibC.errno;
                    if (errno == Errno.EINTR)
                    {
                        continue;
                    }

                    if (errno == Errno.EAGAIN)
                    {
                        return false;
                    }

                    throw new IOException($"send failed: {Errno.Describe(errno)}");
                }

                _start += (int)n;
            }

            _start = _end = 0;
            return true;
        }
        finally
        {
            if (added)
            {
                socket.DangerousRelease();
            }
        }
    }

    /// <summary>Takes up to <paramref name="into"/>'s length of the output, as a socket would.</summary>
    /// <returns>Bytes taken.</returns>
    public int Drain(Span<byte> into)
    {
        int n = Math.Min(into.Length, _end - _start);
        new ReadOnlySpan<byte>(_buffer + _start, n).CopyTo(into);
        _start += n;
        if (_start == _end)
        {
            _start = _end = 0;
        }

        return n;
    }

    /// <summary>Forgets everything queued (the connection is gone).</summary>
    public void Clear() => _start = _end = 0;

    /// <summary>Frees the buffer.</summary>
    public void Dispose()
    {
        if (_buffer != null)
        {
            NativeMemory.AlignedFree(_buffer);
            _buffer = null;
        }
    }

    private void MakeRoom(int dataLength)
    {
        long need = ReplicaFrameHeader.Size + ReplicaFrameHeader.PayloadLength(dataLength);
        if (need > _capacity - _end)
        {
            Buffer.MemoryCopy(_buffer + _start, _buffer, _capacity, _end - _start);
            _end -= _start;
            _start = 0;
        }
    }
}
