using System.Buffers.Binary;

namespace Hci.Transport.Vhost;

/// <summary>Why a vhost-user message is refused; the session answers it as the protocol allows (or closes).</summary>
internal enum VhostUserError
{
    /// <summary>Well formed.</summary>
    None = 0,

    /// <summary>Fewer bytes than the 12-byte header.</summary>
    ShortHeader,

    /// <summary>A protocol version other than 1, or reply bits from a front-end.</summary>
    BadFlags,

    /// <summary>A payload larger than the protocol allows.</summary>
    TooLarge,

    /// <summary>A payload shorter or longer than its request needs.</summary>
    BadSize,

    /// <summary>A field out of range (queue index, region count, config window...).</summary>
    BadValue,

    /// <summary>The number of file descriptors does not match the request.</summary>
    BadFds,
}

/// <summary>The 12-byte vhost-user header.</summary>
/// <param name="Request">The request.</param>
/// <param name="Flags">Version and reply bits.</param>
/// <param name="Size">Payload bytes that follow.</param>
internal readonly record struct VhostUserHeader(VhostUserRequest Request, uint Flags, uint Size)
{
    /// <summary>Header bytes.</summary>
    public const int Length = 12;

    /// <summary>Largest payload accepted (a full memory table of 509 regions, plus slack).</summary>
    public const int MaxPayload = 16 * 1024;

    /// <summary>The front-end asks for a REPLY_ACK.</summary>
    public bool NeedReply => (Flags & 0x8) != 0;
}

/// <summary>Decodes and checks vhost-user messages. Every field comes from another process and is untrusted.</summary>
internal static class VhostUserMessage
{
    /// <summary>Largest number of regions in one SET_MEM_TABLE (the protocol's baseline).</summary>
    public const int MaxMemTableRegions = 8;

    /// <summary>Largest config window (virtio-blk's config space is 60 bytes; the protocol allows 256).</summary>
    public const int MaxConfig = 256;

    /// <summary>VHOST_USER_F_PROTOCOL_FEATURES: a virtio feature bit that only vhost-user knows; with it, protocol features are negotiated.</summary>
    public const ulong ProtocolFeaturesBit = 1UL << 30;

    /// <summary>The NOFD bit of a vring kick/call/err payload.</summary>
    public const ulong VringNoFd = 1UL << 8;

    /// <summary>Reads and checks a header.</summary>
    /// <param name="bytes">At least 12 bytes.</param>
    /// <param name="header">The header.</param>
    /// <returns>The error, or none.</returns>
    public static VhostUserError ParseHeader(ReadOnlySpan<byte> bytes, out VhostUserHeader header) => ParseHeader(bytes, reply: false, out header);

    /// <summary>Reads and checks a header sent by a front-end (<paramref name="reply"/> false) or a back-end's reply.</summary>
    /// <param name="bytes">At least 12 bytes.</param>
    /// <param name="reply">True when a reply is expected: its reply bit must then be set.</param>
    /// <param name="header">The header.</param>
    /// <returns>The error, or none.</returns>
    public static VhostUserError ParseHeader(ReadOnlySpan<byte> bytes, bool reply, out VhostUserHeader header)
    {
        header = default;
        if (bytes.Length < VhostUserHeader.Length)
        {
            return VhostUserError.ShortHeader;
        }

        header = new VhostUserHeader((VhostUserRequest)BinaryPrimitives.ReadUInt32LittleEndian(bytes), BinaryPrimitives.ReadUInt32LittleEndian(bytes[4..]), BinaryPrimitives.ReadUInt32LittleEndian(bytes[8..]));
        if ((header.Flags & 0x3) != 1 || ((header.Flags & 0x4) != 0) != reply)
        {
            return VhostUserError.BadFlags;
        }

        return header.Size > VhostUserHeader.MaxPayload ? VhostUserError.TooLarge : VhostUserError.None;
    }

    /// <summary>A payload that is one u64 (features, queue numbers).</summary>
    /// <param name="payload">The payload.</param>
    /// <param name="value">The value.</param>
    /// <returns>The error, or none.</returns>
    public static VhostUserError ReadU64(ReadOnlySpan<byte> payload, out ulong value)
    {
        value = 0;
        if (payload.Length != 8)
        {
            return VhostUserError.BadSize;
        }

        value = BinaryPrimitives.ReadUInt64LittleEndian(payload);
        return VhostUserError.None;
    }

    /// <summary>A vring state: queue index and a number (size, or the base index).</summary>
    /// <param name="payload">The payload.</param>
    /// <param name="queueCount">Queues the device has: the index must be below it.</param>
    /// <param name="index">The queue index.</param>
    /// <param name="num">The number.</param>
    /// <returns>The error, or none.</returns>
    public static VhostUserError ReadVringState(ReadOnlySpan<byte> payload, int queueCount, out int index, out uint num)
    {
        index = 0;
        num = 0;
        if (payload.Length != 8)
        {
            return VhostUserError.BadSize;
        }

        uint i = BinaryPrimitives.ReadUInt32LittleEndian(payload);
        num = BinaryPrimitives.ReadUInt32LittleEndian(payload[4..]);
        if (i >= (uint)queueCount)
        {
            return VhostUserError.BadValue;
        }

        index = (int)i;
        return VhostUserError.None;
    }

    /// <summary>Vring addresses (in the front-end's virtual addresses).</summary>
    /// <param name="payload">The payload.</param>
    /// <param name="queueCount">Queues the device has.</param>
    /// <param name="index">The queue index.</param>
    /// <param name="descriptors">Descriptor table address.</param>
    /// <param name="used">Used ring address.</param>
    /// <param name="avail">Available ring address.</param>
    /// <returns>The error, or none.</returns>
    public static VhostUserError ReadVringAddr(ReadOnlySpan<byte> payload, int queueCount, out int index, out ulong descriptors, out ulong used, out ulong avail)
    {
        index = 0;
        descriptors = used = avail = 0;
        if (payload.Length != 40)
        {
            return VhostUserError.BadSize;
        }

        uint i = BinaryPrimitives.ReadUInt32LittleEndian(payload);
        descriptors = BinaryPrimitives.ReadUInt64LittleEndian(payload[8..]);
        used = BinaryPrimitives.ReadUInt64LittleEndian(payload[16..]);
        avail = BinaryPrimitives.ReadUInt64LittleEndian(payload[24..]);
        if (i >= (uint)queueCount || descriptors % 16 != 0 || avail % 2 != 0 || used % 4 != 0)
        {
            return VhostUserError.BadValue;
        }

        index = (int)i;
        return VhostUserError.None;
    }

    /// <summary>A vring kick/call/err payload: queue index, and whether an fd came with it.</summary>
    /// <param name="payload">The payload.</param>
    /// <param name="fdCount">File descriptors received with the message.</param>
    /// <param name="queueCount">Queues the device has.</param>
    /// <param name="index">The queue index.</param>
    /// <param name="noFd">True when the front-end says no fd (polling mode).</param>
    /// <returns>The error, or none.</returns>
    public static VhostUserError ReadVringFd(ReadOnlySpan<byte> payload, int fdCount, int queueCount, out int index, out bool noFd)
    {
        index = 0;
        noFd = false;
        var error = ReadU64(payload, out ulong value);
        if (error != VhostUserError.None)
        {
            return error;
        }

        if ((value & ~(0xFFUL | VringNoFd)) != 0 || (int)(value & 0xFF) >= queueCount)
        {
            return VhostUserError.BadValue;
        }

        index = (int)(value & 0xFF);
        noFd = (value & VringNoFd) != 0;
        return fdCount == (noFd ? 0 : 1) ? VhostUserError.None : VhostUserError.BadFds;
    }

    /// <summary>A memory table: one region per fd, each to be mapped at its mmap offset.</summary>
    /// <param name="payload">The payload.</param>
    /// <param name="fdCount">File descriptors received with the message.</param>
    /// <param name="regions">Receives the regions (guest address, size, user address, mmap offset).</param>
    /// <param name="count">How many.</param>
    /// <returns>The error, or none.</returns>
    public static VhostUserError ReadMemTable(ReadOnlySpan<byte> payload, int fdCount, Span<(ulong Guest, ulong Size, ulong User, ulong MmapOffset)> regions, out int count)
    {
        count = 0;
        if (payload.Length < 8)
        {
            return VhostUserError.BadSize;
        }

        uint n = BinaryPrimitives.ReadUInt32LittleEndian(payload);
        if (n == 0 || n > MaxMemTableRegions || n > (uint)regions.Length)
        {
            return VhostUserError.BadValue;
        }

        if (payload.Length != 8 + (n * 32))
        {
            return VhostUserError.BadSize;
        }

        if (fdCount != n)
        {
            return VhostUserError.BadFds;
        }

        for (int i = 0; i < n; i++)
        {
            var r = payload.Slice(8 + (i * 32), 32);
            ulong guest = BinaryPrimitives.ReadUInt64LittleEndian(r);
            ulong size = BinaryPrimitives.ReadUInt64LittleEndian(r[8..]);
            ulong user = BinaryPrimitives.ReadUInt64LittleEndian(r[16..]);
            ulong offset = BinaryPrimitives.ReadUInt64LittleEndian(r[24..]);
            if (size == 0 || guest + size < guest || user + size < user || offset + size < offset || size > (1UL << 48))
            {
                return VhostUserError.BadValue;
            }

            regions[i] = (guest, size, user, offset);
        }

        count = (int)n;
        return VhostUserError.None;
    }

    /// <summary>A config read or write window.</summary>
    /// <param name="payload">The payload.</param>
    /// <param name="configSize">Bytes of the device's config space.</param>
    /// <param name="offset">Window start.</param>
    /// <param name="size">Window length.</param>
    /// <param name="data">The window's data (for SET_CONFIG; zeroes for GET_CONFIG).</param>
    /// <returns>The error, or none.</returns>
    public static VhostUserError ReadConfig(ReadOnlySpan<byte> payload, int configSize, out uint offset, out uint size, out ReadOnlySpan<byte> data)
    {
        offset = size = 0;
        data = default;
        if (payload.Length < 12)
        {
            return VhostUserError.BadSize;
        }

        offset = BinaryPrimitives.ReadUInt32LittleEndian(payload);
        size = BinaryPrimitives.ReadUInt32LittleEndian(payload[4..]);
        if (size > MaxConfig || payload.Length != 12 + size)
        {
            return VhostUserError.BadSize;
        }

        if (offset > (uint)configSize || size > (uint)configSize - offset)
        {
            return VhostUserError.BadValue;
        }

        data = payload.Slice(12, (int)size);
        return VhostUserError.None;
    }
}
