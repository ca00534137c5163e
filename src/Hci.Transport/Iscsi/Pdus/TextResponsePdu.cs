using System.Buffers.Binary;

namespace Hci.Transport.Iscsi;

/// <summary>A Text Response (RFC 7143, 11.11), sent. Named fields over the 48-byte header; see <see cref="IscsiHeader"/> for the fields every PDU shares.</summary>
internal readonly ref struct TextResponsePdu
{
    private readonly Span<byte> _bytes;

    /// <summary>Wraps a header.</summary>
    /// <param name="bytes">At least 48 bytes.</param>
    public TextResponsePdu(Span<byte> bytes)
    {
        _bytes = new IscsiHeader(bytes).Bytes;
    }

    /// <summary>The header's shared fields.</summary>
    public IscsiHeader Header => new(_bytes);

    /// <summary>Clears <paramref name="bytes"/> and starts this PDU in it: its opcode, and the final bit where a PDU of this kind always has it.</summary>
    /// <param name="bytes">At least 48 bytes.</param>
    /// <returns>The view.</returns>
    public static TextResponsePdu Create(Span<byte> bytes)
    {
        var header = new IscsiHeader(bytes);
        header.Clear();
        header.Opcode = IscsiOpcode.TextResponse;
        header.Final = true;
        return new TextResponsePdu(bytes);
    }

    /// <summary>The final bit (F).</summary>
    public bool Final
    {
        get => (_bytes[1] & 0x80) != 0;
        set => _bytes[1] = (byte)(value ? _bytes[1] | 0x80 : _bytes[1] & ~0x80);
    }

    /// <summary>The C bit.</summary>
    public bool Continue
    {
        get => (_bytes[1] & 0x40) != 0;
        set => _bytes[1] = (byte)(value ? _bytes[1] | 0x40 : _bytes[1] & ~0x40);
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

    /// <summary>StatSN: the status sequence number this answer carries.</summary>
    public uint StatSn
    {
        get => BinaryPrimitives.ReadUInt32BigEndian(_bytes[24..]);
        set => BinaryPrimitives.WriteUInt32BigEndian(_bytes[24..], value);
    }

    /// <summary>ExpCmdSN: the next CmdSN the target expects.</summary>
    public uint ExpCmdSn
    {
        get => BinaryPrimitives.ReadUInt32BigEndian(_bytes[28..]);
        set => BinaryPrimitives.WriteUInt32BigEndian(_bytes[28..], value);
    }

    /// <summary>MaxCmdSN: the last CmdSN the target takes now.</summary>
    public uint MaxCmdSn
    {
        get => BinaryPrimitives.ReadUInt32BigEndian(_bytes[32..]);
        set => BinaryPrimitives.WriteUInt32BigEndian(_bytes[32..], value);
    }
}
