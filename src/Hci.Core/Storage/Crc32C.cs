using System.Numerics;
using System.Runtime.CompilerServices;

namespace Hci.Core.Storage;

/// <summary>CRC-32C (Castagnoli) on the CPU's CRC32 instruction (SSE 4.2, ARMv8 CRC): the store's block checksum.</summary>
internal static class Crc32C
{
    /// <summary>The checksum of a 4 KiB block of zeros.</summary>
    public static readonly uint ZeroBlock = Compute(new byte[Replication.ReplicaGeometry.BlockSize]);

    /// <summary>CRC-32C of <paramref name="data"/> (initial value and final XOR all ones).</summary>
    /// <param name="data">The bytes.</param>
    /// <returns>The checksum.</returns>
    public static uint Compute(ReadOnlySpan<byte> data) => ~Append(0xFFFFFFFFu, data);

    /// <summary>CRC-32C of native memory.</summary>
    /// <param name="data">Start.</param>
    /// <param name="length">Bytes.</param>
    /// <returns>The checksum.</returns>
    public static unsafe uint Compute(byte* data, int length) => ~Append(0xFFFFFFFFu, data, length);

    /// <summary>Continues a running CRC (not inverted).</summary>
    /// <param name="crc">The running value; start from 0xFFFFFFFF.</param>
    /// <param name="data">The bytes.</param>
    /// <returns>The running value after them.</returns>
    public static unsafe uint Append(uint crc, ReadOnlySpan<byte> data)
    {
        fixed (byte* p = data)
        {
            return Append(crc, p, data.Length);
        }
    }

    /// <summary>Continues a running CRC (not inverted) over native memory, 8 bytes per instruction.</summary>
    /// <param name="crc">The running value.</param>
    /// <param name="data">Start.</param>
    /// <param name="length">Bytes.</param>
    /// <returns>The running value after them.</returns>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe uint Append(uint crc, byte* data, int length)
    {
        int i = 0;
        for (; i + 32 <= length; i += 32)
        {
            crc = BitOperations.Crc32C(crc, Unsafe.ReadUnaligned<ulong>(data + i));
            crc = BitOperations.Crc32C(crc, Unsafe.ReadUnaligned<ulong>(data + i + 8));
            crc = BitOperations.Crc32C(crc, Unsafe.ReadUnaligned<ulong>(data + i + 16));
            crc = BitOperations.Crc32C(crc, Unsafe.ReadUnaligned<ulong>(data + i + 24));
        }

        for (; i + 8 <= length; i += 8)
        {
            crc = BitOperations.Crc32C(crc, Unsafe.ReadUnaligned<ulong>(data + i));
        }

        for (; i < length; i++)
        {
            crc = BitOperations.Crc32C(crc, data[i]);
        }

        return crc;
    }
}
