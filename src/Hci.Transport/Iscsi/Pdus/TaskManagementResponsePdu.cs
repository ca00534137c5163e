using System.Buffers.Binary;

namespace Hci.Transport.Iscsi;

/// <summary>A SCSI Task Management Function Response (RFC 7143, 11.6), sent. Named fields over the 48-byte header; see <see cref="IscsiHeader"/> for the fields every PDU shares.</summary>
internal readonly ref struct TaskManagementResponsePdu
{
    private readonly Span<byte> _bytes;

    /// <summary>Wraps a header.</summary>
    /// <param name="bytes">At least 48 bytes.</param>
    public TaskManagementResponsePdu(Span<byte> bytes)
    {
        _bytes = new IscsiHeader(bytes).Bytes;
    }

    /// <summary>The header's shared fields.</summary>
    public IscsiHeader Header => new(_bytes);

    /// <summary>Clears <paramref name="bytes"/> and starts this PDU in it: its opcode, and the final bit where a PDU of this kind always has it.</summary>
    /// <param name="bytes">At least 48 bytes.</param>
    /// <returns>The view.</returns>
    public static TaskManagementResponsePdu Create(Span<byte> bytes)
    {
        var header = new IscsiHeader(bytes);
        header.Clear();
        header.Opcode = IscsiOpcode.TaskManagementResponse;
        header.Final = true;
        return new TaskManagementResponsePdu(bytes);
    }

    /// <summary>The final bit (F).</summary>
    public bool Final
    {
        get => (_bytes[1] & 0x80) != 0;
        set => _bytes[1] = (byte)(value ? _bytes[1] | 0x80 : _bytes[1] & ~0x80);
    }

    /// <summary>The function's outcome (byte 2).</summary>
    public IscsiTaskManagementResponse Response
    {
        get => (IscsiTaskManagementResponse)_bytes[2];
        set => _bytes[2] = (byte)value;
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
}
