using System.Buffers.Binary;

namespace Hci.Transport.Iscsi;

/// <summary>A SCSI Task Management Function Request (RFC 7143, 11.5), received. Named fields over the 48-byte header; see <see cref="IscsiHeader"/> for the fields every PDU shares.</summary>
internal readonly ref struct TaskManagementRequestPdu
{
    private readonly Span<byte> _bytes;

    /// <summary>Wraps a header.</summary>
    /// <param name="bytes">At least 48 bytes.</param>
    public TaskManagementRequestPdu(Span<byte> bytes)
    {
        _bytes = new IscsiHeader(bytes).Bytes;
    }

    /// <summary>The header's shared fields.</summary>
    public IscsiHeader Header => new(_bytes);

    /// <summary>The function (byte 1, low 7 bits).</summary>
    public IscsiTaskManagementFunction Function
    {
        get => (IscsiTaskManagementFunction)(_bytes[1] & 0x7f);
        set => _bytes[1] = (byte)((_bytes[1] & ~0x7f) | ((int)value & 0x7f));
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

    /// <summary>The task an ABORT TASK names.</summary>
    public uint ReferencedTaskTag
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

    /// <summary>RefCmdSN: the CmdSN of the task an ABORT TASK names.</summary>
    public uint RefCmdSn
    {
        get => BinaryPrimitives.ReadUInt32BigEndian(_bytes[32..]);
        set => BinaryPrimitives.WriteUInt32BigEndian(_bytes[32..], value);
    }
}
