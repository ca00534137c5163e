using System.Buffers.Binary;
using System.Numerics;

namespace Hci.Transport.Iscsi;

/// <summary>
/// iSCSI header and data digests: CRC32C (Castagnoli, RFC 7143 13.1 and RFC 3720 appendix B.4), on the CPU's
/// CRC32C instruction where there is one. The digest goes on the wire least significant byte first.
/// </summary>
internal static class IscsiDigest
{
    /// <summary>Bytes of a digest on the wire.</summary>
    public const int Length = 4;

    /// <summary>CRC32C of <paramref name="data"/> (initial value and final XOR all ones).</summary>
    /// <param name="data">The bytes.</param>
    /// <returns>The checksum.</returns>
    public static uint Compute(ReadOnlySpan<byte> data) => ~Append(0xFFFFFFFFu, data);

    /// <summary>Continues a running CRC32C (not inverted) over more bytes; start from 0xFFFFFFFF and invert at the end.</summary>
    /// <param name="crc">The running value.</param>
    /// <param name="data">The bytes.</param>
    /// <returns>The running value after them.</returns>
    public static uint Append(uint crc, ReadOnlySpan<byte> data)
    {
        int i = 0;
        for (; i + 8 <= data.Length; i += 8)
        {
            crc = BitOperations.Crc32C(crc, BinaryPrimitives.ReadUInt64LittleEndian(data[i..]));
        }

        for (; i < data.Length; i++)
        {
            crc = BitOperations.Crc32C(crc, data[i]);
        }

        return crc;
    }

    /// <summary>Writes a digest as it goes on the wire.</summary>
    /// <param name="digest">The digest.</param>
    /// <param name="into">At least 4 bytes.</param>
    public static void Write(uint digest, Span<byte> into) => BinaryPrimitives.WriteUInt32LittleEndian(into, digest);

    /// <summary>Checks bytes against the digest that followed them on the wire.</summary>
    /// <param name="data">The covered bytes.</param>
    /// <param name="wire">The 4 digest bytes received.</param>
    /// <returns>True when they match.</returns>
    public static bool Verify(ReadOnlySpan<byte> data, ReadOnlySpan<byte> wire) => wire.Length >= Length && Compute(data) == BinaryPrimitives.ReadUInt32LittleEndian(wire);
}
