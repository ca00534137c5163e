using System.Runtime.InteropServices;

namespace Hci.Transport.Iscsi;

/// <summary>What <see cref="IscsiPduReader.TryRead"/> found.</summary>
internal enum PduReadStatus
{
    /// <summary>No whole PDU yet: read more bytes in.</summary>
    NeedMore,

    /// <summary>A whole PDU, in the reader's <see cref="ReceivedPdu"/>.</summary>
    Pdu,

    /// <summary>A data segment longer than the negotiated limit: a framing error that ends the connection.</summary>
    DataSegmentTooLong,

    /// <summary>A header digest that does not match: the framing cannot be trusted, the connection ends.</summary>
    HeaderDigestError,
}

/// <summary>One PDU as it lies in the reader's buffer: valid until the reader takes more bytes or is compacted.</summary>
/// <param name="Header">The 48-byte Basic Header Segment.</param>
/// <param name="AdditionalHeader">Additional header segments, if any.</param>
/// <param name="Data">The data segment, without its padding.</param>
/// <param name="DataDigestOk">False when a data digest was negotiated and does not match (the PDU is rejected, the connection goes on).</param>
internal readonly ref struct ReceivedPdu(Span<byte> Header, Span<byte> AdditionalHeader, Span<byte> Data, bool DataDigestOk)
{
    /// <summary>The 48-byte Basic Header Segment.</summary>
    public Span<byte> Header { get; } = Header;

    /// <summary>Additional header segments, if any.</summary>
    public Span<byte> AdditionalHeader { get; } = AdditionalHeader;

    /// <summary>The data segment, without its padding.</summary>
    public Span<byte> Data { get; } = Data;

    /// <summary>False when a data digest was negotiated and does not match.</summary>
    public bool DataDigestOk { get; } = DataDigestOk;
}

/// <summary>
/// Frames iSCSI PDUs out of a byte stream (RFC 7143, 11.2): the bytes go in (<see cref="Tail"/> and
/// <see cref="Advance"/> after a receive, or <see cref="Append"/>), whole PDUs come out of <see cref="TryRead"/>
/// with their digests checked. No socket: the connection receives into the reader, as Garnet's
/// <c>IMessageConsumer.TryConsumeMessages</c> is handed the bytes read. One native buffer, sized at creation;
/// reading allocates nothing.
/// </summary>
internal sealed unsafe class IscsiPduReader : IDisposable
{
    private byte* _buffer;
    private readonly int _capacity;
    private int _start;
    private int _end;

    /// <summary>Creates a reader that holds up to <paramref name="capacity"/> bytes.</summary>
    /// <param name="capacity">Bytes of buffer: at least one largest PDU (header, AHS, digests, padded data).</param>
    public IscsiPduReader(int capacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, IscsiHeader.Length + 1024 + 8);
        _capacity = capacity;
        _buffer = (byte*)NativeMemory.AlignedAlloc((nuint)capacity, 64);
    }

    /// <summary>Whether PDUs carry a header digest (from the full feature phase, once negotiated).</summary>
    public bool HeaderDigest { get; set; }

    /// <summary>Whether data segments carry a data digest.</summary>
    public bool DataDigest { get; set; }

    /// <summary>The largest data segment accepted (the negotiated MaxRecvDataSegmentLength).</summary>
    public int MaxDataSegmentLength { get; set; } = 8192;

    /// <summary>Bytes received and not yet read as PDUs.</summary>
    public int Buffered => _end - _start;

    /// <summary>Where the next received bytes go; <see cref="FreeBytes"/> of room.</summary>
    public byte* Tail => _buffer + _end;

    /// <summary>Room after <see cref="Tail"/>.</summary>
    public int FreeBytes => _capacity - _end;

    /// <summary>Counts <paramref name="count"/> bytes written at <see cref="Tail"/> as received.</summary>
    /// <param name="count">Bytes, at most <see cref="FreeBytes"/>.</param>
    public void Advance(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(count, FreeBytes);
        _end += count;
    }

    /// <summary>Copies received bytes in (tests, and callers that read elsewhere); returns how many fitted.</summary>
    /// <param name="bytes">The bytes.</param>
    /// <returns>Bytes taken.</returns>
    public int Append(ReadOnlySpan<byte> bytes)
    {
        Compact();
        int n = Math.Min(bytes.Length, FreeBytes);
        bytes[..n].CopyTo(new Span<byte>(Tail, n));
        _end += n;
        return n;
    }

    /// <summary>
    /// Moves unread bytes to the front when the room behind them runs short. PDUs read earlier are invalid after.
    /// </summary>
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

    /// <summary>
    /// Takes the next whole PDU out of the buffer when all of it is there. Lengths come from the network: they are
    /// checked against <see cref="MaxDataSegmentLength"/> before anything else is read.
    /// </summary>
    /// <param name="pdu">The PDU, when the result is <see cref="PduReadStatus.Pdu"/>.</param>
    /// <returns>What was found.</returns>
    public PduReadStatus TryRead(out ReceivedPdu pdu)
    {
        pdu = default;
        int available = _end - _start;
        if (available < IscsiHeader.Length)
        {
            return PduReadStatus.NeedMore;
        }

        byte* p = _buffer + _start;
        var h = new IscsiHeader(new Span<byte>(p, IscsiHeader.Length));
        int ahs = h.AdditionalHeaderLength;
        int length = h.DataSegmentLength;
        if (length > MaxDataSegmentLength)
        {
            return PduReadStatus.DataSegmentTooLong;
        }

        int headerDigest = HeaderDigest ? IscsiDigest.Length : 0;
        int padded = (length + 3) & ~3;
        int dataDigest = DataDigest && length > 0 ? IscsiDigest.Length : 0;
        int total = IscsiHeader.Length + ahs + headerDigest + padded + dataDigest; // at most 48 + 1020 + 4 + 2^24 + 4
        if (total > _capacity)
        {
            return PduReadStatus.DataSegmentTooLong; // a limit larger than the buffer: never wait for what cannot fit
        }

        if (available < total)
        {
            return PduReadStatus.NeedMore;
        }

        if (headerDigest != 0 && !IscsiDigest.Verify(new ReadOnlySpan<byte>(p, IscsiHeader.Length + ahs), new ReadOnlySpan<byte>(p + IscsiHeader.Length + ahs, IscsiDigest.Length)))
        {
            return PduReadStatus.HeaderDigestError;
        }

        byte* data = p + IscsiHeader.Length + ahs + headerDigest;
        bool dataOk = dataDigest == 0 || IscsiDigest.Verify(new ReadOnlySpan<byte>(data, padded), new ReadOnlySpan<byte>(data + padded, IscsiDigest.Length));
        pdu = new ReceivedPdu(new Span<byte>(p, IscsiHeader.Length), new Span<byte>(p + IscsiHeader.Length, ahs), new Span<byte>(data, length), dataOk);
        _start += total;
        return PduReadStatus.Pdu;
    }

    /// <summary>Frees the buffer.</summary>
    public void Dispose()
    {
        if (_buffer != null)
        {
            NativeMemory.AlignedFree(_buffer);
            _buffer = null;
        }
    }
}
