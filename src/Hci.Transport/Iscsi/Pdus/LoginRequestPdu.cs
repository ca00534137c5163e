using System.Buffers.Binary;

namespace Hci.Transport.Iscsi;

/// <summary>A Login Request (RFC 7143, 11.12), received. Named fields over the 48-byte header; see <see cref="IscsiHeader"/> for the fields every PDU shares.</summary>
internal readonly ref struct LoginRequestPdu
{
    private readonly Span<byte> _bytes;

    /// <summary>Wraps a header.</summary>
    /// <param name="bytes">At least 48 bytes.</param>
    public LoginRequestPdu(Span<byte> bytes)
    {
        _bytes = new IscsiHeader(bytes).Bytes;
    }

    /// <summary>The header's shared fields.</summary>
    public IscsiHeader Header => new(_bytes);

    /// <summary>The T bit: the initiator is ready to move to the next stage.</summary>
    public bool Transit
    {
        get => (_bytes[1] & 0x80) != 0;
        set => _bytes[1] = (byte)(value ? _bytes[1] | 0x80 : _bytes[1] & ~0x80);
    }

    /// <summary>The C bit: the text goes on in the next PDU.</summary>
    public bool Continue
    {
        get => (_bytes[1] & 0x40) != 0;
        set => _bytes[1] = (byte)(value ? _bytes[1] | 0x40 : _bytes[1] & ~0x40);
    }

    /// <summary>CSG: the current stage (0 security, 1 operational).</summary>
    public int CurrentStage
    {
        get => (_bytes[1] >> 2) & 3;
        set => _bytes[1] = (byte)((_bytes[1] & ~(3 << 2)) | ((value & 3) << 2));
    }

    /// <summary>NSG: the stage the initiator wants next (3: full feature phase).</summary>
    public int NextStage
    {
        get => (_bytes[1] >> 0) & 3;
        set => _bytes[1] = (byte)((_bytes[1] & ~(3 << 0)) | ((value & 3) << 0));
    }

    /// <summary>Version-max.</summary>
    public byte VersionMax
    {
        get => _bytes[2];
        set => _bytes[2] = value;
    }

    /// <summary>Version-min.</summary>
    public byte VersionMin
    {
        get => _bytes[3];
        set => _bytes[3] = value;
    }

    /// <summary>The ISID (initiator part of the session id).</summary>
    public Span<byte> Isid => _bytes.Slice(8, 6);

    /// <summary>The TSIH (0 for a new session).</summary>
    public ushort Tsih
    {
        get => BinaryPrimitives.ReadUInt16BigEndian(_bytes[14..]);
        set => BinaryPrimitives.WriteUInt16BigEndian(_bytes[14..], value);
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
