using System.Buffers.Binary;

namespace Hci.Transport.Iscsi;

/// <summary>A SCSI Data-Out (RFC 7143, 11.7), received. Named fields over the 48-byte header; see <see cref="IscsiHeader"/> for the fields every PDU shares.</summary>
internal readonly ref struct DataOutPdu
{
    private readonly Span<byte> _bytes;

    /// <summary>Wraps a header.</summary>
    /// <param name="bytes">At least 48 bytes.</param>
    public DataOutPdu(Span<byte> bytes)
    {
        _bytes = new IscsiHeader(bytes).Bytes;
    }

    /// <summary>The header's shared fields.</summary>
    public IscsiHeader Header => new(_bytes);

    /// <summary>The final bit (F).</summary>
    public bool Final
    {
        get => (_bytes[1] & 0x80) != 0;
        set => _bytes[1] = (byte)(value ? _bytes[1] | 0x80 : _bytes[1] & ~0x80);
    }

    /// <summary>The LUN field as it is on the wire (bytes 8-15).</summary>
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

    /// <summary>The Target Transfer Tag.</summary>
    public uint TargetTransferTag
    {
        get => BinaryPrimitives.ReadUInt32BigEndian(_bytes[20..]);
        set => BinaryPrimitives.WriteUInt32BigEndian(_bytes[20..], value);
    }

    /// <summary>ExpStatSN.</summary>
    public uint ExpStatSn
    {
        get => BinaryPrimitives.ReadUInt32BigEndian(_bytes[28..]);
        set => BinaryPrimitives.WriteUInt32BigEndian(_bytes[28..], value);
    }

    /// <summary>DataSN: the PDU's number within its data sequence.</summary>
    public uint DataSn
    {
        get => BinaryPrimitives.ReadUInt32BigEndian(_bytes[36..]);
        set => BinaryPrimitives.WriteUInt32BigEndian(_bytes[36..], value);
    }

    /// <summary>Where in the command's buffer this PDU's data goes.</summary>
    public uint BufferOffset
    {
        get => BinaryPrimitives.ReadUInt32BigEndian(_bytes[40..]);
        set => BinaryPrimitives.WriteUInt32BigEndian(_bytes[40..], value);
    }
}
