using System.Buffers.Binary;

namespace Hci.Transport.Iscsi;

/// <summary>A Ready To Transfer, R2T (RFC 7143, 11.8), sent: asks the initiator for a burst of write data. Named fields over the 48-byte header; see <see cref="IscsiHeader"/> for the fields every PDU shares.</summary>
internal readonly ref struct ReadyToTransferPdu
{
    private readonly Span<byte> _bytes;

    /// <summary>Wraps a header.</summary>
    /// <param name="bytes">At least 48 bytes.</param>
    public ReadyToTransferPdu(Span<byte> bytes)
    {
        _bytes = new IscsiHeader(bytes).Bytes;
    }

    /// <summary>The header's shared fields.</summary>
    public IscsiHeader Header => new(_bytes);

    /// <summary>Clears <paramref name="bytes"/> and starts this PDU in it: its opcode, and the final bit where a PDU of this kind always has it.</summary>
    /// <param name="bytes">At least 48 bytes.</param>
    /// <returns>The view.</returns>
    public static ReadyToTransferPdu Create(Span<byte> bytes)
    {
        var header = new IscsiHeader(bytes);
        header.Clear();
        header.Opcode = IscsiOpcode.ReadyToTransfer;
        header.Final = true;
        return new ReadyToTransferPdu(bytes);
    }

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

    /// <summary>R2TSN: the R2T's number within its task.</summary>
    public uint R2TSn
    {
        get => BinaryPrimitives.ReadUInt32BigEndian(_bytes[36..]);
        set => BinaryPrimitives.WriteUInt32BigEndian(_bytes[36..], value);
    }

    /// <summary>Where the asked burst starts in the command's buffer.</summary>
    public uint BufferOffset
    {
        get => BinaryPrimitives.ReadUInt32BigEndian(_bytes[40..]);
        set => BinaryPrimitives.WriteUInt32BigEndian(_bytes[40..], value);
    }

    /// <summary>Bytes asked for.</summary>
    public uint DesiredDataTransferLength
    {
        get => BinaryPrimitives.ReadUInt32BigEndian(_bytes[44..]);
        set => BinaryPrimitives.WriteUInt32BigEndian(_bytes[44..], value);
    }
}
