using System.Buffers.Binary;

namespace Hci.Transport.Iscsi;

/// <summary>
/// A view over a 48-byte iSCSI Basic Header Segment (RFC 7143, 11.2): the fields every PDU shares, read and
/// written in network byte order. The bytes come from the network and are untrusted: lengths are reported as
/// they are, and the connection checks them against its negotiated limits before reading on.
/// </summary>
internal readonly ref struct IscsiHeader
{
    /// <summary>Bytes of a Basic Header Segment.</summary>
    public const int Length = 48;

    /// <summary>Largest DataSegmentLength the 24-bit field can carry.</summary>
    public const int MaxDataSegmentLength = (1 << 24) - 1;

    private readonly Span<byte> _bytes;

    /// <summary>Wraps a header.</summary>
    /// <param name="bytes">At least 48 bytes; only the first 48 are used.</param>
    public IscsiHeader(Span<byte> bytes)
    {
        if (bytes.Length < Length)
        {
            throw new ArgumentException($"An iSCSI header is {Length} bytes (got {bytes.Length}).", nameof(bytes));
        }

        _bytes = bytes[..Length];
    }

    /// <summary>The raw bytes.</summary>
    public Span<byte> Bytes => _bytes;

    /// <summary>The opcode (low 6 bits of byte 0).</summary>
    public IscsiOpcode Opcode
    {
        get => (IscsiOpcode)(_bytes[0] & 0x3f);
        set => _bytes[0] = (byte)((_bytes[0] & 0x40) | ((byte)value & 0x3f));
    }

    /// <summary>The immediate-delivery bit (initiator PDUs).</summary>
    public bool Immediate
    {
        get => (_bytes[0] & 0x40) != 0;
        set => _bytes[0] = (byte)(value ? _bytes[0] | 0x40 : _bytes[0] & ~0x40);
    }

    /// <summary>The final bit (byte 1, bit 7).</summary>
    public bool Final
    {
        get => (_bytes[1] & 0x80) != 0;
        set => _bytes[1] = (byte)(value ? _bytes[1] | 0x80 : _bytes[1] & ~0x80);
    }

    /// <summary>Byte 1 whole: opcode-specific flags.</summary>
    public byte Flags
    {
        get => _bytes[1];
        set => _bytes[1] = value;
    }

    /// <summary>Bytes of additional header segments that follow (TotalAHSLength is in 4-byte words).</summary>
    public int AdditionalHeaderLength
    {
        get => _bytes[4] * 4;
        set
        {
            if (value < 0 || value > 255 * 4 || value % 4 != 0)
            {
                throw new ArgumentOutOfRangeException(nameof(value), value, "The additional header length is a multiple of 4 up to 1020.");
            }

            _bytes[4] = (byte)(value / 4);
        }
    }

    /// <summary>Bytes of the data segment, before padding to a multiple of 4.</summary>
    public int DataSegmentLength
    {
        get => (_bytes[5] << 16) | (_bytes[6] << 8) | _bytes[7];
        set
        {
            if ((uint)value > MaxDataSegmentLength)
            {
                throw new ArgumentOutOfRangeException(nameof(value), value, "DataSegmentLength is a 24-bit field.");
            }

            _bytes[5] = (byte)(value >> 16);
            _bytes[6] = (byte)(value >> 8);
            _bytes[7] = (byte)value;
        }
    }

    /// <summary>Bytes 8-15: the LUN (SCSI PDUs) or opcode-specific fields (login: ISID and TSIH).</summary>
    public ulong Lun
    {
        get => BinaryPrimitives.ReadUInt64BigEndian(_bytes[8..]);
        set => BinaryPrimitives.WriteUInt64BigEndian(_bytes[8..], value);
    }

    /// <summary>The Initiator Task Tag.</summary>
    public uint InitiatorTaskTag
    {
        get => BinaryPrimitives.ReadUInt32BigEndian(_bytes[16..]);
        set => BinaryPrimitives.WriteUInt32BigEndian(_bytes[16..], value);
    }

    /// <summary>Bytes of the data segment padded to a multiple of 4, as it is on the wire.</summary>
    public int PaddedDataSegmentLength => (DataSegmentLength + 3) & ~3;

    /// <summary>A 32-bit field at <paramref name="offset"/> (20, 24, 28, 32, 36, 40 or 44: opcode-specific).</summary>
    /// <param name="offset">Byte offset, a multiple of 4 from 20 to 44.</param>
    /// <returns>The value.</returns>
    public uint Field(int offset) => BinaryPrimitives.ReadUInt32BigEndian(_bytes[CheckField(offset)..]);

    /// <summary>Sets a 32-bit field at <paramref name="offset"/>.</summary>
    /// <param name="offset">Byte offset, a multiple of 4 from 20 to 44.</param>
    /// <param name="value">The value.</param>
    public void SetField(int offset, uint value) => BinaryPrimitives.WriteUInt32BigEndian(_bytes[CheckField(offset)..], value);

    /// <summary>Clears the header.</summary>
    public void Clear() => _bytes.Clear();

    private static int CheckField(int offset)
    {
        if (offset < 20 || offset > 44 || offset % 4 != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), offset, "Opcode-specific 32-bit fields are at offsets 20 to 44.");
        }

        return offset;
    }
}
