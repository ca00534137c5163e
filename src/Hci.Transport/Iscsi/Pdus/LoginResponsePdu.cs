using System.Buffers.Binary;

namespace Hci.Transport.Iscsi;

/// <summary>A Login Response (RFC 7143, 11.13), sent. Named fields over the 48-byte header; see <see cref="IscsiHeader"/> for the fields every PDU shares.</summary>
internal readonly ref struct LoginResponsePdu
{
    private readonly Span<byte> _bytes;

    /// <summary>Wraps a header.</summary>
    /// <param name="bytes">At least 48 bytes.</param>
    public LoginResponsePdu(Span<byte> bytes)
    {
        _bytes = new IscsiHeader(bytes).Bytes;
    }

    /// <summary>The header's shared fields.</summary>
    public IscsiHeader Header => new(_bytes);

    /// <summary>Clears <paramref name="bytes"/> and starts this PDU in it: its opcode, and the final bit where a PDU of this kind always has it.</summary>
    /// <param name="bytes">At least 48 bytes.</param>
    /// <returns>The view.</returns>
    public static LoginResponsePdu Create(Span<byte> bytes)
    {
        var header = new IscsiHeader(bytes);
        header.Clear();
        header.Opcode = IscsiOpcode.LoginResponse;
        header.Final = false;
        return new LoginResponsePdu(bytes);
    }

    /// <summary>The T bit: the target moves to the next stage.</summary>
    public bool Transit
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

    /// <summary>CSG.</summary>
    public int CurrentStage
    {
        get => (_bytes[1] >> 2) & 3;
        set => _bytes[1] = (byte)((_bytes[1] & ~(3 << 2)) | ((value & 3) << 2));
    }

    /// <summary>NSG.</summary>
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

    /// <summary>Version-active.</summary>
    public byte VersionActive
    {
        get => _bytes[3];
        set => _bytes[3] = value;
    }

    /// <summary>The ISID, echoed.</summary>
    public Span<byte> Isid => _bytes.Slice(8, 6);

    /// <summary>The TSIH the target gives the session.</summary>
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

    /// <summary>Status-Class (0 success, 1 redirection, 2 initiator error, 3 target error).</summary>
    public byte StatusClass
    {
        get => _bytes[36];
        set => _bytes[36] = value;
    }

    /// <summary>Status-Detail.</summary>
    public byte StatusDetail
    {
        get => _bytes[37];
        set => _bytes[37] = value;
    }
}
