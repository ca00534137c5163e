using System.Buffers.Binary;

namespace Hci.Transport.Iscsi;

/// <summary>A Logout Request (RFC 7143, 11.14), received. Named fields over the 48-byte header; see <see cref="IscsiHeader"/> for the fields every PDU shares.</summary>
internal readonly ref struct LogoutRequestPdu
{
    private readonly Span<byte> _bytes;

    /// <summary>Wraps a header.</summary>
    /// <param name="bytes">At least 48 bytes.</param>
    public LogoutRequestPdu(Span<byte> bytes)
    {
        _bytes = new IscsiHeader(bytes).Bytes;
    }

    /// <summary>The header's shared fields.</summary>
    public IscsiHeader Header => new(_bytes);

    /// <summary>Why the initiator logs out (0: close the session).</summary>
    public int ReasonCode
    {
        get => _bytes[1] & 0x7f;
        set => _bytes[1] = (byte)((_bytes[1] & ~0x7f) | (value & 0x7f));
    }

    /// <summary>The Initiator Task Tag.</summary>
    public uint InitiatorTaskTag
    {
        get => BinaryPrimitives.ReadUInt32BigEndian(_bytes[16..]);
        set => BinaryPrimitives.WriteUInt32BigEndian(_bytes[16..], value);
    }

    /// <summary>CID.</summary>
    public ushort ConnectionId
    {
        get => BinaryPrimitives.ReadUInt16BigEndian(_bytes[20..]);
        set => BinaryPrimitives.WriteUInt16BigEndian(_bytes[20..], value);
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
}
