using System.Buffers.Binary;

namespace Hci.Transport.Iscsi;

/// <summary>A Logout Response (RFC 7143, 11.15), sent. Named fields over the 48-byte header; see <see cref="IscsiHeader"/> for the fields every PDU shares.</summary>
internal readonly ref struct LogoutResponsePdu
{
    private readonly Span<byte> _bytes;

    /// <summary>Wraps a header.</summary>
    /// <param name="bytes">At least 48 bytes.</param>
    public LogoutResponsePdu(Span<byte> bytes)
    {
        _bytes = new IscsiHeader(bytes).Bytes;
    }

    /// <summary>The header's shared fields.</summary>
    public IscsiHeader Header => new(_bytes);

    /// <summary>Clears <paramref name="bytes"/> and starts this PDU in it: its opcode, and the final bit where a PDU of this kind always has it.</summary>
    /// <param name="bytes">At least 48 bytes.</param>
    /// <returns>The view.</returns>
    public static LogoutResponsePdu Create(Span<byte> bytes)
    {
        var header = new IscsiHeader(bytes);
        header.Clear();
        header.Opcode = IscsiOpcode.LogoutResponse;
        header.Final = true;
        return new LogoutResponsePdu(bytes);
    }

    /// <summary>The final bit (F).</summary>
    public bool Final
    {
        get => (_bytes[1] & 0x80) != 0;
        set => _bytes[1] = (byte)(value ? _bytes[1] | 0x80 : _bytes[1] & ~0x80);
    }

    /// <summary>The logout's outcome (0: closed successfully).</summary>
    public byte Response
    {
        get => _bytes[2];
        set => _bytes[2] = value;
    }

    /// <summary>The Initiator Task Tag.</summary>
    public uint InitiatorTaskTag
    {
        get => BinaryPrimitives.ReadUInt32BigEndian(_bytes[16..]);
        set => BinaryPrimitives.WriteUInt32BigEndian(_bytes[16..], value);
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

    /// <summary>Time2Wait.</summary>
    public ushort Time2Wait
    {
        get => BinaryPrimitives.ReadUInt16BigEndian(_bytes[40..]);
        set => BinaryPrimitives.WriteUInt16BigEndian(_bytes[40..], value);
    }

    /// <summary>Time2Retain.</summary>
    public ushort Time2Retain
    {
        get => BinaryPrimitives.ReadUInt16BigEndian(_bytes[42..]);
        set => BinaryPrimitives.WriteUInt16BigEndian(_bytes[42..], value);
    }
}
