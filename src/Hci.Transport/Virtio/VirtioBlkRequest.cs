using System.Buffers.Binary;

namespace Hci.Transport.Virtio;

/// <summary>Why a virtio-blk chain cannot be carried out; each maps to a status the guest understands.</summary>
internal enum VirtioBlkParseError
{
    /// <summary>Well formed.</summary>
    None = 0,

    /// <summary>Fewer than 16 readable header bytes: fail with IOERR.</summary>
    ShortHeader,

    /// <summary>No writable byte for the status: the chain can only be returned with nothing written.</summary>
    NoStatus,

    /// <summary>Data buffers of the wrong direction for the type (device-writable data on a write): IOERR.</summary>
    WrongDirection,

    /// <summary>A type this device does not know: UNSUPP.</summary>
    UnknownType,

    /// <summary>Data length not a whole number of sectors, or discard ranges malformed: IOERR.</summary>
    BadLength,
}

/// <summary>
/// A virtio-blk request read from a descriptor chain: header, data buffers and the status byte's place. The
/// chain is untrusted: the header may be split across buffers, the status may share a buffer with data, and
/// every inconsistency is reported, never trusted.
/// </summary>
internal unsafe struct VirtioBlkRequest
{
    /// <summary>The request type (IN, OUT, FLUSH, ...).</summary>
    public uint Type;

    /// <summary>The starting sector (512-byte units).</summary>
    public ulong Sector;

    /// <summary>Where the status byte goes, or 0 when the chain has no writable byte.</summary>
    public nint Status;

    /// <summary>Total data bytes.</summary>
    public long DataLength;

    /// <summary>Number of data segments written to the caller's span.</summary>
    public int DataCount;

    /// <summary>Parses a walked chain.</summary>
    /// <param name="chain">The chain's buffers, readable ones first.</param>
    /// <param name="data">Receives the data buffers (the status byte trimmed off).</param>
    /// <param name="request">The request.</param>
    /// <returns><see cref="VirtioBlkParseError.None"/>, or what is wrong.</returns>
    public static VirtioBlkParseError Parse(ReadOnlySpan<ChainSegment> chain, Span<ChainSegment> data, out VirtioBlkRequest request)
    {
        request = default;

        // The status byte is the last byte of the last device-writable buffer.
        int last = chain.Length - 1;
        if (last < 0 || !chain[last].DeviceWritable)
        {
            return VirtioBlkParseError.NoStatus;
        }

        request.Status = chain[last].Address + (nint)chain[last].Length - 1;

        // Gather the 16-byte header from the leading readable buffers, wherever it is split.
        Span<byte> header = stackalloc byte[VirtioBlk.HeaderSize];
        int have = 0;
        int index = 0;
        uint consumedInSegment = 0;
        while (have < VirtioBlk.HeaderSize && index < chain.Length && !chain[index].DeviceWritable)
        {
            var s = chain[index];
            int take = (int)Math.Min(s.Length, (uint)(VirtioBlk.HeaderSize - have));
            new ReadOnlySpan<byte>((void*)s.Address, take).CopyTo(header[have..]);
            have += take;
            if (take < s.Length)
            {
                consumedInSegment = (uint)take;
                break;
            }

            index++;
        }

        if (have < VirtioBlk.HeaderSize)
        {
            return VirtioBlkParseError.ShortHeader;
        }

        request.Type = BinaryPrimitives.ReadUInt32LittleEndian(header);
        request.Sector = BinaryPrimitives.ReadUInt64LittleEndian(header[8..]);

        // Data: everything between the header and the status byte.
        int count = 0;
        long total = 0;
        bool anyReadable = false;
        bool anyWritable = false;
        for (int i = index; i < chain.Length; i++)
        {
            var s = chain[i];
            nint address = s.Address;
            uint length = s.Length;
            if (i == index && consumedInSegment > 0)
            {
                address += (nint)consumedInSegment;
                length -= consumedInSegment;
            }

            if (i == last)
            {
                length -= 1; // the status byte
            }

            if (length == 0)
            {
                continue;
            }

            if (count == data.Length)
            {
                return VirtioBlkParseError.BadLength;
            }

            anyReadable |= !s.DeviceWritable;
            anyWritable |= s.DeviceWritable;
            data[count++] = new ChainSegment(address, length, s.DeviceWritable);
            total += length;
        }

        request.DataCount = count;
        request.DataLength = total;
        switch (request.Type)
        {
            case VirtioBlk.TypeIn:
            case VirtioBlk.TypeGetId:
                if (anyReadable)
                {
                    return VirtioBlkParseError.WrongDirection;
                }

                break;
            case VirtioBlk.TypeOut:
            case VirtioBlk.TypeDiscard:
            case VirtioBlk.TypeWriteZeroes:
                if (anyWritable)
                {
                    return VirtioBlkParseError.WrongDirection;
                }

                break;
            case VirtioBlk.TypeFlush:
                break;
            default:
                return VirtioBlkParseError.UnknownType;
        }

        if (request.Type is VirtioBlk.TypeIn or VirtioBlk.TypeOut && total % VirtioBlk.SectorSize != 0)
        {
            return VirtioBlkParseError.BadLength;
        }

        if (request.Type is VirtioBlk.TypeDiscard or VirtioBlk.TypeWriteZeroes && (total == 0 || total % VirtioBlk.RangeSize != 0))
        {
            return VirtioBlkParseError.BadLength;
        }

        return VirtioBlkParseError.None;
    }

    /// <summary>The status a parse error is answered with.</summary>
    /// <param name="error">The error.</param>
    /// <returns>VIRTIO_BLK_S_UNSUPP for unknown types, VIRTIO_BLK_S_IOERR otherwise.</returns>
    public static byte StatusFor(VirtioBlkParseError error) => error == VirtioBlkParseError.UnknownType ? VirtioBlk.StatusUnsupported : VirtioBlk.StatusIoErr;
}
