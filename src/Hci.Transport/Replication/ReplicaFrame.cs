using System.Buffers.Binary;
using Hci.Core.Blocks;
using Hci.Core.Replication;
using Hci.Transport.Iscsi;

namespace Hci.Transport.Replication;

/// <summary>What a frame is (byte 3 of the header).</summary>
internal enum ReplicaFrameKind : byte
{
    /// <summary>An operation on a replica store, owner to replica.</summary>
    Request = 1,

    /// <summary>A replica's answer to a request, matched by request id.</summary>
    Response = 2,

    /// <summary>Handshake, client to server: the client's nonce and node id.</summary>
    Hello = 3,

    /// <summary>Handshake, server to client: the server's nonce, node id and proof.</summary>
    Challenge = 4,

    /// <summary>Handshake, client to server: the client's proof.</summary>
    Proof = 5,

    /// <summary>Handshake, server to client: the client is authenticated; requests may follow.</summary>
    Welcome = 6,
}

/// <summary>Header flag bits (byte 6).</summary>
[Flags]
internal enum ReplicaFrameFlags : byte
{
    None = 0,

    /// <summary>Requests: force unit access (<see cref="BlockRequestFlags.ForceUnitAccess"/>).</summary>
    ForceUnitAccess = 1,

    /// <summary>Read responses: the extent is allocated on the store (<see cref="ReplicaRequest.Allocated"/>).</summary>
    Allocated = 2,

    All = ForceUnitAccess | Allocated,
}

/// <summary>
/// The node-to-node protocol's frame: a 64-byte little-endian header, then a payload of <see cref="Length"/> data
/// bytes (when the frame carries data) followed by one CRC-32C per 4 KiB block of that data (the last block may be
/// short). See docs/cluster.md, "The node-to-node protocol", for the layout; the offsets below are the wire's.
/// </summary>
internal ref struct ReplicaFrameHeader
{
    public const int Size = 64;
    public const ushort Magic = 0x5248; // "HR" on the wire
    public const byte Version = 1;

    public ReplicaFrameKind Kind;
    public ReplicaOperation Operation;
    public ReplicaStatus Status;
    public ReplicaFrameFlags Flags;
    public IoClass Class;
    public uint RequestId;
    public ushort Device;
    public ulong VolumeId;
    public long Extent;
    public long Offset;

    /// <summary>Requests: the range the operation covers. Responses and handshake frames: the data bytes carried.</summary>
    public int Length;

    /// <summary>Requests: the owner's epoch. Responses: the store's newest epoch for the volume.</summary>
    public ulong Epoch;

    /// <summary>Requests: the operation's argument. Responses: the result (a signed 32-bit value).</summary>
    public ulong Argument;

    /// <summary>Bytes of data the frame carries (the payload less its checksums).</summary>
    public readonly int DataLength => Kind == ReplicaFrameKind.Request ? (Operation == ReplicaOperation.Write ? Length : 0) : Length;

    /// <summary>Checksums after <paramref name="dataLength"/> bytes of data: one per 4 KiB block, rounded up.</summary>
    public static int ChecksumCount(int dataLength) => (int)(((long)dataLength + ReplicaGeometry.BlockSize - 1) / ReplicaGeometry.BlockSize);

    /// <summary>Payload bytes for <paramref name="dataLength"/> bytes of data (64-bit: the caller checks the bound).</summary>
    public static long PayloadLength(int dataLength) => dataLength + (4L * ChecksumCount(dataLength));

    /// <summary>Writes the header, with its CRC, into 64 bytes.</summary>
    public readonly void Write(Span<byte> into)
    {
        into = into[..Size];
        BinaryPrimitives.WriteUInt16LittleEndian(into, Magic);
        into[2] = Version;
        into[3] = (byte)Kind;
        into[4] = (byte)Operation;
        into[5] = (byte)Status;
        into[6] = (byte)Flags;
        into[7] = (byte)Class;
        BinaryPrimitives.WriteUInt32LittleEndian(into[8..], RequestId);
        BinaryPrimitives.WriteUInt16LittleEndian(into[12..], Device);
        BinaryPrimitives.WriteUInt16LittleEndian(into[14..], 0);
        BinaryPrimitives.WriteUInt64LittleEndian(into[16..], VolumeId);
        BinaryPrimitives.WriteInt64LittleEndian(into[24..], Extent);
        BinaryPrimitives.WriteInt64LittleEndian(into[32..], Offset);
        BinaryPrimitives.WriteInt32LittleEndian(into[40..], Length);
        BinaryPrimitives.WriteUInt64LittleEndian(into[44..], Epoch);
        BinaryPrimitives.WriteUInt64LittleEndian(into[52..], Argument);
        BinaryPrimitives.WriteUInt32LittleEndian(into[60..], IscsiDigest.Compute(into[..60]));
    }

    /// <summary>Reads a header without checking more than its bytes can say (see <see cref="ReplicaFrameReader"/>).</summary>
    public static ReplicaFrameError Read(ReadOnlySpan<byte> from, out ReplicaFrameHeader header)
    {
        header = default;
        from = from[..Size];
        if (BinaryPrimitives.ReadUInt16LittleEndian(from) != Magic)
        {
            return ReplicaFrameError.BadMagic;
        }

        if (from[2] != Version)
        {
            return ReplicaFrameError.BadVersion;
        }

        if (IscsiDigest.Compute(from[..60]) != BinaryPrimitives.ReadUInt32LittleEndian(from[60..]))
        {
            return ReplicaFrameError.BadHeaderChecksum;
        }

        header.Kind = (ReplicaFrameKind)from[3];
        header.Operation = (ReplicaOperation)from[4];
        header.Status = (ReplicaStatus)from[5];
        header.Flags = (ReplicaFrameFlags)from[6];
        header.Class = (IoClass)from[7];
        header.RequestId = BinaryPrimitives.ReadUInt32LittleEndian(from[8..]);
        header.Device = BinaryPrimitives.ReadUInt16LittleEndian(from[12..]);
        header.VolumeId = BinaryPrimitives.ReadUInt64LittleEndian(from[16..]);
        header.Extent = BinaryPrimitives.ReadInt64LittleEndian(from[24..]);
        header.Offset = BinaryPrimitives.ReadInt64LittleEndian(from[32..]);
        header.Length = BinaryPrimitives.ReadInt32LittleEndian(from[40..]);
        header.Epoch = BinaryPrimitives.ReadUInt64LittleEndian(from[44..]);
        header.Argument = BinaryPrimitives.ReadUInt64LittleEndian(from[52..]);
        if (BinaryPrimitives.ReadUInt16LittleEndian(from[14..]) != 0)
        {
            return ReplicaFrameError.BadField;
        }

        return ReplicaFrameError.None;
    }
}

/// <summary>Why a frame was refused: each ends the connection it came on.</summary>
internal enum ReplicaFrameError
{
    None,
    BadMagic,
    BadVersion,
    BadHeaderChecksum,
    BadKind,
    BadOperation,
    BadField,
    BadLength,
    BadRange,
    TooLong,
}
