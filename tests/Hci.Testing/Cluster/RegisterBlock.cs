using System.Buffers.Binary;
using Hci.Core.Storage;

namespace Hci.Testing;

/// <summary>
/// The 4 KiB value a <see cref="RegisterLoad"/> writes into a block: a header (a magic number, the block's own number,
/// the writer's id and the block's sequence number) and a payload derived from the header, closed by a CRC-32C over
/// everything but the checksum field. Any copy of a block (through a volume, or on a replica's device file) decodes to
/// zeros (never written), one write's value, or corrupt data, whatever else lies beside it.
/// </summary>
/// <remarks>Layout, little-endian: bytes 0-3 magic <c>HCIR</c>, 4-7 writer, 8-15 block, 16-23 sequence, 24-27 CRC-32C
/// of bytes 0-23 and 28-4095, 28-4095 payload (xorshift64 seeded from block, writer and sequence).</remarks>
public static class RegisterBlock
{
    /// <summary>The size of a value: one block.</summary>
    public const int Size = 4096;

    private const uint Magic = 0x52494348; // "HCIR" read as little-endian bytes
    private const int ChecksumOffset = 24;
    private const int PayloadOffset = 28;

    /// <summary>Writes the value of (<paramref name="block"/>, <paramref name="writer"/>, <paramref name="sequence"/>).</summary>
    /// <param name="into">At least 4 KiB.</param>
    /// <param name="block">The block's number on the device (offset / 4096).</param>
    /// <param name="writer">The writer's id (not 0).</param>
    /// <param name="sequence">The write's sequence number in the block's history (from 1).</param>
    public static void Encode(Span<byte> into, long block, int writer, long sequence)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(into.Length, Size);
        ArgumentOutOfRangeException.ThrowIfLessThan(sequence, 1);
        var value = into[..Size];
        BinaryPrimitives.WriteUInt32LittleEndian(value, Magic);
        BinaryPrimitives.WriteInt32LittleEndian(value[4..], writer);
        BinaryPrimitives.WriteInt64LittleEndian(value[8..], block);
        BinaryPrimitives.WriteInt64LittleEndian(value[16..], sequence);
        ulong x = ((ulong)block * 0x9E3779B97F4A7C15UL) ^ ((ulong)sequence * 0xC2B2AE3D27D4EB4FUL) ^ ((ulong)(uint)writer << 32) ^ 1;
        for (int i = PayloadOffset; i + 8 <= Size; i += 8)
        {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            BinaryPrimitives.WriteUInt64LittleEndian(value[i..], x);
        }

        // 4068 payload bytes: the last 4 are not covered by the loop above.
        BinaryPrimitives.WriteUInt32LittleEndian(value[(Size - 4)..], (uint)x);
        BinaryPrimitives.WriteUInt32LittleEndian(value[ChecksumOffset..], Checksum(value));
    }

    /// <summary>What <paramref name="data"/> holds as block <paramref name="block"/>'s value.</summary>
    /// <param name="block">The block it was read from.</param>
    /// <param name="data">4 KiB read from anywhere.</param>
    /// <returns>Zeros, a write's value, or corrupt data with the reason.</returns>
    public static RegisterObservation Decode(long block, ReadOnlySpan<byte> data)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(data.Length, Size);
        var value = data[..Size];
        if (!value.ContainsAnyExcept((byte)0))
        {
            return RegisterObservation.Zeros;
        }

        uint magic = BinaryPrimitives.ReadUInt32LittleEndian(value);
        int writer = BinaryPrimitives.ReadInt32LittleEndian(value[4..]);
        long holds = BinaryPrimitives.ReadInt64LittleEndian(value[8..]);
        long sequence = BinaryPrimitives.ReadInt64LittleEndian(value[16..]);
        uint stored = BinaryPrimitives.ReadUInt32LittleEndian(value[ChecksumOffset..]);
        if (magic != Magic)
        {
            return RegisterObservation.Corrupt($"no register header (first bytes {magic:x8})");
        }

        uint computed = Checksum(value);
        if (computed != stored)
        {
            return RegisterObservation.Corrupt($"checksum {computed:x8} differs from the stored {stored:x8} (header: block {holds}, writer {writer}, sequence {sequence})");
        }

        if (holds != block)
        {
            return RegisterObservation.Corrupt($"holds block {holds}'s value (writer {writer}, sequence {sequence}): a misdirected write or read");
        }

        return sequence < 1 ? RegisterObservation.Corrupt($"sequence {sequence} is not a write's") : RegisterObservation.Of(writer, sequence);
    }

    private static uint Checksum(ReadOnlySpan<byte> value) =>
        ~Crc32C.Append(Crc32C.Append(0xFFFFFFFFu, value[..ChecksumOffset]), value[PayloadOffset..Size]);
}
