using System.Buffers.Binary;

namespace Hci.Transport.Iscsi;

/// <summary>A SCSI Command (RFC 7143, 11.3), received. Named fields over the 48-byte header; see <see cref="IscsiHeader"/> for the fields every PDU shares.</summary>
internal readonly ref struct ScsiCommandPdu
{
    private readonly Span<byte> _bytes;

    /// <summary>Wraps a header.</summary>
    /// <param name="bytes">At least 48 bytes.</param>
    public ScsiCommandPdu(Span<byte> bytes)
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

    /// <summary>The R bit: the command reads (Data-In expected).</summary>
    public bool Read
    {
        get => (_bytes[1] & 0x40) != 0;
        set => _bytes[1] = (byte)(value ? _bytes[1] | 0x40 : _bytes[1] & ~0x40);
    }

    /// <summary>The W bit: the command writes (Data-Out expected).</summary>
    public bool Write
    {
        get => (_bytes[1] & 0x20) != 0;
        set => _bytes[1] = (byte)(value ? _bytes[1] | 0x20 : _bytes[1] & ~0x20);
    }

    /// <summary>The task attribute (ATTR, 3 bits).</summary>
    public int TaskAttributes
    {
        get => _bytes[1] & 0x07;
        set => _bytes[1] = (byte)((_bytes[1] & ~0x07) | (value & 0x07));
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

    /// <summary>Bytes the initiator expects to move for the whole command.</summary>
    public uint ExpectedDataTransferLength
    {
        get => BinaryPrimitives.ReadUInt32BigEndian(_bytes[20..]);
        set => BinaryPrimitives.WriteUInt32BigEndian(_bytes[20..], value);
    }

    /// <summary>CmdSN: the command sequence number.</summary>
    public uint CmdSn
    {
        get => BinaryPrimitives.ReadUInt32BigEndian(_bytes[24..]);
        set => BinaryPrimitives.WriteUInt32BigEndian(_bytes[24..], value);
    }

    /// <summary>ExpStatSN: the next StatSN the initiator expects.</summary>
    public uint ExpStatSn
    {
        get => BinaryPrimitives.ReadUInt32BigEndian(_bytes[28..]);
        set => BinaryPrimitives.WriteUInt32BigEndian(_bytes[28..], value);
    }

    /// <summary>The 16-byte CDB.</summary>
    public Span<byte> Cdb => _bytes.Slice(32, 16);
}
