using System.Runtime.InteropServices;
using Hci.Core.Blocks;
using Tmds.Linux;

namespace Hci.Transport.Iscsi;

/// <summary>
/// Gathers answer PDUs until they are sent: headers, digests, padding and small data segments are written into an
/// arena of native chunks; large data (a read's buffer) is referenced where it lies, with no copy. Everything
/// queued goes out in order through one <c>sendmsg</c> per <see cref="Flush"/> to a socket given by the caller;
/// <see cref="Drain"/> takes the bytes out without a socket (tests). The arena grows by chunks while an initiator
/// is slow to read, up to a bound; steady I/O reuses the first chunk and allocates nothing.
/// </summary>
internal sealed unsafe class IscsiPduWriter : IDisposable
{
    // sendmsg takes at most IOV_MAX (1024) vectors at once.
    private const int MaxIovecsPerSend = 1024;

    private readonly int _chunkSize;
    private readonly int _maxChunks;
    private readonly List<nint> _chunks = [];
    private int _chunk;
    private int _used;
    private iovec* _iov;
    private int _iovCapacity;
    private readonly int _maxIovecs;
    private int _iovCount;
    private int _iovHead;
    private long _pending;

    /// <summary>Creates a writer.</summary>
    /// <param name="chunkSize">Bytes per arena chunk: bounds the largest data segment copied (see <see cref="MaxCopiedSegment"/>).</param>
    /// <param name="maxPendingBytes">The most arena bytes held for an initiator that does not read: past it, <c>TryQueue</c> fails.</param>
    public IscsiPduWriter(int chunkSize, long maxPendingBytes)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(chunkSize, 4096);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxPendingBytes, chunkSize);
        _chunkSize = chunkSize;
        _maxChunks = (int)Math.Min(maxPendingBytes / chunkSize, 4096);
        _maxIovecs = _maxChunks * (chunkSize / 56) * 2; // at most two vectors per header written
        _chunks.Add((nint)NativeMemory.AlignedAlloc((nuint)chunkSize, 64));
        _iovCapacity = 512;
        _iov = (iovec*)NativeMemory.Alloc((nuint)(_iovCapacity * sizeof(iovec)));
    }

    /// <summary>Whether headers go out with a digest.</summary>
    public bool HeaderDigest { get; set; }

    /// <summary>Whether data segments go out with a digest.</summary>
    public bool DataDigest { get; set; }

    /// <summary>The largest data segment <c>TryQueue</c> copies (one chunk less the header, digests and padding).</summary>
    public int MaxCopiedSegment => _chunkSize - IscsiHeader.Length - 16;

    /// <summary>Bytes queued and not yet sent.</summary>
    public long PendingBytes => _pending;

    /// <summary>True when everything queued has been sent.</summary>
    public bool IsEmpty => _iovHead == _iovCount;

    /// <summary>
    /// Queues one PDU: the header (its DataSegmentLength and TotalAHSLength set here), its digest, and the data,
    /// copied (<paramref name="copy"/>) or referenced where it lies (which must then stay untouched until sent).
    /// </summary>
    /// <param name="header">The 48-byte header.</param>
    /// <param name="data">The data segment, or null.</param>
    /// <param name="length">Bytes of data.</param>
    /// <param name="copy">Copy the data into the arena (at most <see cref="MaxCopiedSegment"/> bytes).</param>
    /// <returns>False when the output bound is reached (an initiator that does not read its answers).</returns>
    public bool TryQueue(ReadOnlySpan<byte> header, byte* data, int length, bool copy)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        if (copy && length > MaxCopiedSegment)
        {
            throw new ArgumentOutOfRangeException(nameof(length), length, $"At most {MaxCopiedSegment} bytes are copied.");
        }

        int padded = (length + 3) & ~3;
        bool dataDigest = DataDigest && length > 0;
        int need = IscsiHeader.Length + 4 + (copy ? padded : 4) + 4;
        if ((_used + need > _chunkSize && !NextChunk()) || !EnsureIovecs(3))
        {
            return false;
        }

        byte* arena = (byte*)_chunks[_chunk];
        int start = _used;
        byte* h = arena + _used;
        header[..IscsiHeader.Length].CopyTo(new Span<byte>(h, IscsiHeader.Length));
        h[4] = 0; // TotalAHSLength: no answer carries additional headers
        h[5] = (byte)(length >> 16);
        h[6] = (byte)(length >> 8);
        h[7] = (byte)length;
        _used += IscsiHeader.Length;
        if (HeaderDigest)
        {
            IscsiDigest.Write(IscsiDigest.Compute(new ReadOnlySpan<byte>(h, IscsiHeader.Length)), new Span<byte>(arena + _used, IscsiDigest.Length));
            _used += IscsiDigest.Length;
        }

        if (length > 0)
        {
            if (copy)
            {
                Buffer.MemoryCopy(data, arena + _used, _chunkSize - _used, length);
            }
            else
            {
                AddIovec(arena + start, _used - start);
                AddIovec(data, length);
                start = _used;
            }

            byte* pad = arena + _used + (copy ? length : 0);
            for (int i = length; i < padded; i++)
            {
                *pad++ = 0;
            }

            _used += copy ? padded : padded - length;
            if (dataDigest)
            {
                uint crc = IscsiDigest.Append(0xFFFFFFFFu, new ReadOnlySpan<byte>(data, length));
                crc = IscsiDigest.Append(crc, new ReadOnlySpan<byte>(pad - (padded - length), padded - length));
                IscsiDigest.Write(~crc, new Span<byte>(arena + _used, IscsiDigest.Length));
                _used += IscsiDigest.Length;
            }
        }

        AddIovec(arena + start, _used - start);
        return true;
    }

    /// <summary>Queues a PDU whose data (if any) is copied.</summary>
    /// <param name="header">The 48-byte header.</param>
    /// <param name="data">The data segment.</param>
    /// <returns>False when the output bound is reached.</returns>
    public bool TryQueue(ReadOnlySpan<byte> header, ReadOnlySpan<byte> data)
    {
        fixed (byte* d = data)
        {
            return TryQueue(header, d, data.Length, copy: true);
        }
    }

    /// <summary>Sends what the socket takes now, without waiting.</summary>
    /// <param name="socket">A connected stream socket (non-blocking sends are asked for with MSG_DONTWAIT).</param>
    /// <returns>True when all the output is gone; false when the socket is full (wait for it to be writable).</returns>
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
            while (_iovHead < _iovCount)
            {
                msghdr msg = default;
                msg.msg_iov = _iov + _iovHead;
                msg.msg_iovlen = Math.Min(_iovCount - _iovHead, MaxIovecsPerSend);
                long n = LibC.sendmsg(fd, &msg, LibC.MSG_DONTWAIT | LibC.MSG_NOSIGNAL);
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

                Consume(n);
            }

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

    /// <summary>Takes up to <paramref name="into"/>'s length of the output, as a socket would (tests).</summary>
    /// <param name="into">Where the bytes go.</param>
    /// <returns>Bytes taken.</returns>
    public int Drain(Span<byte> into)
    {
        int taken = 0;
        for (int i = _iovHead; i < _iovCount && taken < into.Length; i++)
        {
            int n = Math.Min((int)_iov[i].iov_len, into.Length - taken);
            new ReadOnlySpan<byte>(_iov[i].iov_base, n).CopyTo(into[taken..]);
            taken += n;
        }

        Consume(taken);
        return taken;
    }

    /// <summary>Frees the arena and the vectors.</summary>
    public void Dispose()
    {
        foreach (nint chunk in _chunks)
        {
            NativeMemory.AlignedFree((void*)chunk);
        }

        _chunks.Clear();
        if (_iov != null)
        {
            NativeMemory.Free(_iov);
            _iov = null;
        }
    }

    private void Consume(long n)
    {
        _pending -= n;
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

        if (_iovHead == _iovCount)
        {
            // All sent: the arena starts over; chunks grown for a slow reader are kept (bounded) for the next one.
            _iovHead = _iovCount = 0;
            _chunk = 0;
            _used = 0;
            _pending = 0;
        }
    }

    private bool NextChunk()
    {
        if (_chunk + 1 >= _maxChunks)
        {
            return false;
        }

        _chunk++;
        _used = 0;
        if (_chunk == _chunks.Count)
        {
            _chunks.Add((nint)NativeMemory.AlignedAlloc((nuint)_chunkSize, 64));
        }

        return true;
    }

    private bool EnsureIovecs(int more)
    {
        if (_iovCount + more <= _iovCapacity)
        {
            return true;
        }

        if (_iovCount + more > _maxIovecs)
        {
            return false;
        }

        if (_iovHead > 0)
        {
            // Move the unsent vectors to the front before growing.
            Buffer.MemoryCopy(_iov + _iovHead, _iov, (long)_iovCapacity * sizeof(iovec), (long)(_iovCount - _iovHead) * sizeof(iovec));
            _iovCount -= _iovHead;
            _iovHead = 0;
            if (_iovCount + more <= _iovCapacity)
            {
                return true;
            }
        }

        int capacity = Math.Min(_iovCapacity * 2, _maxIovecs);
        _iov = (iovec*)NativeMemory.Realloc(_iov, (nuint)(capacity * sizeof(iovec)));
        _iovCapacity = capacity;
        return true;
    }

    private void AddIovec(byte* at, int length)
    {
        if (length == 0)
        {
            return;
        }

        _pending += length;
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
}
