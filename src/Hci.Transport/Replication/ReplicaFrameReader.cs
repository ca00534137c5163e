using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Hci.Core.Blocks;
using Hci.Core.Replication;
using Hci.Transport.Iscsi;

namespace Hci.Transport.Replication;

/// <summary>What <see cref="ReplicaFrameReader.TryPeek"/> found.</summary>
internal enum ReplicaReadStatus
{
    /// <summary>No whole frame yet: receive more bytes.</summary>
    NeedMore,

    /// <summary>A whole frame, valid until <see cref="ReplicaFrameReader.Consume"/> or more bytes come in.</summary>
    Frame,

    /// <summary>A frame that breaks the protocol or the connection's bounds (<see cref="ReplicaFrameReader.Error"/>
    /// says how): the connection ends.</summary>
    Malformed,
}

/// <summary>One frame as it lies in the reader's buffer.</summary>
internal unsafe ref struct ReplicaFrame
{
    public ReplicaFrameHeader Header;

    /// <summary>The data (<see cref="ReplicaFrameHeader.DataLength"/> bytes), or null.</summary>
    public byte* Data;

    /// <summary>The data's checksums, one per 4 KiB block.</summary>
    public byte* Checksums;

    /// <summary>Bytes of the whole frame.</summary>
    public int Size;

    public readonly int DataLength => Header.DataLength;

    /// <summary>True when every 4 KiB block of the data matches its checksum.</summary>
    public readonly bool DataIntact => ReplicaFrameReader.Verify(Data, DataLength, Checksums);

    /// <summary>Checksum <paramref name="index"/> as carried.</summary>
    public readonly uint Checksum(int index) => BinaryPrimitives.ReadUInt32LittleEndian(new ReadOnlySpan<byte>(Checksums + (4 * index), 4));
}

/// <summary>
/// Frames node-to-node protocol frames out of a byte stream with no socket in sight (as <see cref="IscsiPduReader"/>):
/// bytes go in at <see cref="Tail"/> (then <see cref="Advance"/>) or through <see cref="Append"/>; whole frames come out of
/// <see cref="TryPeek"/>, every header field checked against this connection's bounds (kinds allowed now, largest data)
/// with 64-bit arithmetic before anything is waited for. One native buffer, sized at creation; reading allocates nothing.
/// </summary>
internal sealed unsafe class ReplicaFrameReader : IDisposable
{
    private byte* _buffer;
    private readonly int _capacity;
    private int _start;
    private int _end;

    /// <summary>Creates a reader.</summary>
    /// <param name="maxDataLength">The most data one frame may carry on this connection.</param>
    /// <param name="capacity">Buffer bytes; at least one largest frame (0: two of them).</param>
    public ReplicaFrameReader(int maxDataLength, int capacity = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxDataLength);
        long largest = ReplicaFrameHeader.Size + ReplicaFrameHeader.PayloadLength(maxDataLength);
        long size = capacity == 0 ? 2 * largest : capacity;
        ArgumentOutOfRangeException.ThrowIfLessThan(size, largest, nameof(capacity));
        _capacity = checked((int)size);
        MaxDataLength = maxDataLength;
        _buffer = (byte*)NativeMemory.AlignedAlloc((nuint)_capacity, 64);
    }

    /// <summary>The most data a frame may carry (lowered during the handshake).</summary>
    public int MaxDataLength { get; set; }

    /// <summary>The frame kinds accepted now (a bit per <see cref="ReplicaFrameKind"/> value).</summary>
    public int AllowedKinds { get; set; } = 1 << (int)ReplicaFrameKind.Request;

    /// <summary>Why the last <see cref="ReplicaReadStatus.Malformed"/> was.</summary>
    public ReplicaFrameError Error { get; private set; }

    /// <summary>After <see cref="ReplicaReadStatus.NeedMore"/> with a whole, valid header: the bytes the frame still lacks.</summary>
    public int Missing { get; private set; }

    /// <summary>Bytes received and not yet consumed as frames.</summary>
    public int Buffered => _end - _start;

    /// <summary>Where the next received bytes go; <see cref="FreeBytes"/> of room.</summary>
    public byte* Tail => _buffer + _end;

    /// <summary>Room after <see cref="Tail"/>.</summary>
    public int FreeBytes => _capacity - _end;

    /// <summary>The bit of <see cref="AllowedKinds"/> for <paramref name="kind"/>.</summary>
    public static int KindBit(ReplicaFrameKind kind) => 1 << (int)kind;

    /// <summary>Counts bytes written at <see cref="Tail"/> as received.</summary>
    public void Advance(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(count, FreeBytes);
        _end += count;
    }

    /// <summary>Copies received bytes in (tests, fuzzing); returns how many fitted.</summary>
    public int Append(ReadOnlySpan<byte> bytes)
    {
        Compact();
        int n = Math.Min(bytes.Length, FreeBytes);
        bytes[..n].CopyTo(new Span<byte>(Tail, n));
        _end += n;
        return n;
    }

    /// <summary>Moves unread bytes to the front when room runs short; frames peeked earlier are invalid after.</summary>
    public void Compact()
    {
        if (_start == _end)
        {
            _start = _end = 0;
        }
        else if (_start > 0 && _capacity - _end < _capacity / 2)
        {
            Buffer.MemoryCopy(_buffer + _start, _buffer, _capacity, _end - _start);
            _end -= _start;
            _start = 0;
        }
    }

    /// <summary>Looks at the next frame without taking it (a connection that cannot take it now leaves it there).</summary>
    /// <param name="frame">The frame, when the result is <see cref="ReplicaReadStatus.Frame"/>.</param>
    /// <returns>What was found.</returns>
    public ReplicaReadStatus TryPeek(out ReplicaFrame frame)
    {
        frame = default;
        int available = _end - _start;
        if (available < ReplicaFrameHeader.Size)
        {
            return ReplicaReadStatus.NeedMore;
        }

        byte* p = _buffer + _start;
        var error = ReplicaFrameHeader.Read(new ReadOnlySpan<byte>(p, ReplicaFrameHeader.Size), out frame.Header);
        if (error == ReplicaFrameError.None)
        {
            error = Check(ref frame.Header);
        }

        if (error != ReplicaFrameError.None)
        {
            Error = error;
            return ReplicaReadStatus.Malformed;
        }

        long total = ReplicaFrameHeader.Size + ReplicaFrameHeader.PayloadLength(frame.Header.DataLength);
        if (total > _capacity)
        {
            Error = ReplicaFrameError.TooLong; // never wait for what cannot fit
            return ReplicaReadStatus.Malformed;
        }

        if (available < total)
        {
            Missing = (int)(total - available);
            return ReplicaReadStatus.NeedMore;
        }

        frame.Size = (int)total;
        int dataLength = frame.Header.DataLength;
        frame.Data = dataLength > 0 ? p + ReplicaFrameHeader.Size : null;
        frame.Checksums = p + ReplicaFrameHeader.Size + dataLength;
        return ReplicaReadStatus.Frame;
    }

    /// <summary>Takes the frame last peeked out of the buffer.</summary>
    /// <param name="frame">It.</param>
    public void Consume(in ReplicaFrame frame)
    {
        _start += frame.Size;
    }

    /// <summary>Checks <paramref name="length"/> bytes at <paramref name="data"/> against one little-endian CRC-32C per 4 KiB block.</summary>
    public static bool Verify(byte* data, int length, byte* checksums)
    {
        for (int at = 0, i = 0; at < length; at += ReplicaGeometry.BlockSize, i++)
        {
            int n = Math.Min(ReplicaGeometry.BlockSize, length - at);
            if (IscsiDigest.Compute(new ReadOnlySpan<byte>(data + at, n)) != BinaryPrimitives.ReadUInt32LittleEndian(new ReadOnlySpan<byte>(checksums + (4 * i), 4)))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>Forgets every byte received (the connection is gone; a new one starts clean).</summary>
    public void Reset() => _start = _end = 0;

    /// <summary>Frees the buffer.</summary>
    public void Dispose()
    {
        if (_buffer != null)
        {
            NativeMemory.AlignedFree(_buffer);
            _buffer = null;
        }
    }

    private ReplicaFrameError Check(ref ReplicaFrameHeader h)
    {
        if ((int)h.Kind is < 1 or > 6 || (AllowedKinds & KindBit(h.Kind)) == 0)
        {
            return ReplicaFrameError.BadKind;
        }

        if (h.Length < 0)
        {
            return ReplicaFrameError.BadLength;
        }

        switch (h.Kind)
        {
            case ReplicaFrameKind.Request:
                return CheckRequest(ref h);
            case ReplicaFrameKind.Response:
                if ((byte)h.Operation is < 1 or > 10)
                {
                    return ReplicaFrameError.BadOperation;
                }

                if ((byte)h.Status > (byte)ReplicaStatus.BadPayload || (h.Flags & ~ReplicaFrameFlags.Allocated) != 0 || h.Class != 0
                    || h.Device != 0 || h.VolumeId != 0 || h.Extent != 0 || h.Offset != 0 || h.Argument is > int.MaxValue and < unchecked((ulong)int.MinValue))
                {
                    return ReplicaFrameError.BadField;
                }

                return h.Length > MaxDataLength ? ReplicaFrameError.BadLength : ReplicaFrameError.None;
            default:
                // Handshake frames carry their data and nothing else.
                if (h.Operation != 0 || h.Status != 0 || h.Flags != 0 || h.Class != 0 || h.RequestId != 0 || h.Device != 0
                    || h.VolumeId != 0 || h.Extent != 0 || h.Offset != 0 || h.Epoch != 0 || h.Argument != 0)
                {
                    return ReplicaFrameError.BadField;
                }

                return h.Length > MaxDataLength ? ReplicaFrameError.BadLength : ReplicaFrameError.None;
        }
    }

    private ReplicaFrameError CheckRequest(ref ReplicaFrameHeader h)
    {
        if ((byte)h.Operation is < 1 or > 10)
        {
            return ReplicaFrameError.BadOperation;
        }

        if (h.Status != 0 || (h.Flags & ~ReplicaFrameFlags.ForceUnitAccess) != 0 || (byte)h.Class > (byte)IoClass.Background)
        {
            return ReplicaFrameError.BadField;
        }

        // The range: non-negative, within one transfer, and its end representable (64-bit, checked).
        if (h.Extent < 0 || h.Offset < 0 || h.Length > ReplicaGeometry.MaxTransfer || h.Length > MaxDataLength)
        {
            return ReplicaFrameError.BadRange;
        }

        if (h.Offset > long.MaxValue - h.Length)
        {
            return ReplicaFrameError.BadRange;
        }

        long end = h.Offset + h.Length;

        if (h.Operation is ReplicaOperation.Read or ReplicaOperation.Write or ReplicaOperation.ReadChecksums
            && (((ulong)h.Offset | (uint)h.Length | (ulong)end) & (ReplicaGeometry.BlockSize - 1)) != 0)
        {
            return ReplicaFrameError.BadRange;
        }

        if (h.Operation != ReplicaOperation.MarkClean && h.Argument != 0)
        {
            return ReplicaFrameError.BadField;
        }

        return ReplicaFrameError.None;
    }
}
