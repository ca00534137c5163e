using System.Buffers.Binary;
using Hci.Core.Replication;
using Hci.Transport.Iscsi;
using Hci.Transport.Replication;

namespace Hci.Transport.Tests.Replication;

/// <summary>Makes hostile frames: random bytes, valid frames with a byte mangled (the header CRC then fixed or not), and
/// headers whose lengths, offsets and extents sit on the boundaries (0, 1, 2^31, 2^32, the largest transfer +-1, the
/// type's ends).</summary>
internal sealed class HostileFrames(int seed)
{
    private static readonly long[] s_lengths = [0, 1, 2, 4095, 4096, 4097, ReplicaGeometry.MaxTransfer - 1, ReplicaGeometry.MaxTransfer, ReplicaGeometry.MaxTransfer + 1, ReplicaGeometry.MaxTransfer + 4096, int.MaxValue, 1L << 31, 1L << 32, -1, -4096, int.MinValue];
    private static readonly long[] s_offsets = [0, 1, 4096, 1L << 31, (1L << 31) - 4096, 1L << 32, (1L << 32) - 4096, long.MaxValue, long.MaxValue - 4095, long.MaxValue & ~4095L, -1, -4096, long.MinValue];
    private readonly Random _rng = new(seed);

    /// <summary>The next hostile frame: header and whatever payload goes with it.</summary>
    public byte[] Next()
    {
        switch (_rng.Next(6))
        {
            case 0:
            {
                byte[] junk = new byte[_rng.Next(1, 200)];
                _rng.NextBytes(junk);
                return junk;
            }

            case 1:
            {
                // A valid small frame with one byte mangled; the header CRC is recomputed half of the time, so that the
                // field checks behind it are reached.
                byte[] frame = Valid();
                int at = _rng.Next(frame.Length);
                frame[at] ^= (byte)_rng.Next(1, 256);
                if (_rng.Next(2) == 0 && at < 60)
                {
                    BinaryPrimitives.WriteUInt32LittleEndian(frame.AsSpan(60), IscsiDigest.Compute(frame.AsSpan(0, 60)));
                }

                return frame;
            }

            case 2:
            case 3:
                return Boundary();
            default:
                return Valid();
        }
    }

    /// <summary>A request the protocol accepts (small), with random but legal fields.</summary>
    public byte[] Valid()
    {
        var op = (ReplicaOperation)_rng.Next(1, 11);
        int blocks = _rng.Next(0, 4);
        int length = op is ReplicaOperation.Read or ReplicaOperation.Write or ReplicaOperation.ReadChecksums or ReplicaOperation.ListExtents or ReplicaOperation.GetDirtyRegions ? blocks * ReplicaGeometry.BlockSize : 0;
        var header = new ReplicaFrameHeader
        {
            Kind = ReplicaFrameKind.Request,
            Operation = op,
            RequestId = (uint)_rng.Next(),
            Device = (ushort)_rng.Next(0, 6),
            VolumeId = (ulong)_rng.Next(0, 4),
            Extent = _rng.Next(0, 3) == 0 ? s_offsets[_rng.Next(s_offsets.Length)] & long.MaxValue : _rng.Next(0, 8),
            Offset = (_rng.Next(0, 3) == 0 ? s_offsets[_rng.Next(s_offsets.Length)] & long.MaxValue : _rng.Next(0, 2048) * 4096L) & ~4095L,
            Length = length,
            Epoch = (ulong)_rng.Next(0, 5),
            Argument = op == ReplicaOperation.MarkClean ? (ulong)_rng.NextInt64() : 0,
        };
        if (header.Offset > long.MaxValue - length)
        {
            header.Offset = 0;
        }

        return Frame(header, op == ReplicaOperation.Write ? length : 0);
    }

    /// <summary>A header with boundary values in its lengths and ranges (and a CRC that matches), and a payload as long
    /// as it claims when that is small.</summary>
    public byte[] Boundary()
    {
        var header = new ReplicaFrameHeader
        {
            Kind = (ReplicaFrameKind)(_rng.Next(8) == 0 ? _rng.Next(0, 9) : 1),
            Operation = (ReplicaOperation)(_rng.Next(6) == 0 ? _rng.Next(0, 256) : _rng.Next(1, 11)),
            Status = (ReplicaStatus)(_rng.Next(8) == 0 ? _rng.Next(0, 256) : 0),
            Flags = (ReplicaFrameFlags)(_rng.Next(8) == 0 ? _rng.Next(0, 256) : 0),
            Class = (Hci.Core.Blocks.IoClass)(_rng.Next(8) == 0 ? _rng.Next(0, 256) : 0),
            RequestId = (uint)_rng.Next(),
            Device = (ushort)(_rng.Next(4) == 0 ? 65535 : _rng.Next(0, 4)),
            VolumeId = _rng.Next(4) == 0 ? ulong.MaxValue : (ulong)_rng.Next(0, 4),
            Extent = s_offsets[_rng.Next(s_offsets.Length)],
            Offset = s_offsets[_rng.Next(s_offsets.Length)],
            Length = unchecked((int)s_lengths[_rng.Next(s_lengths.Length)]),
            Epoch = _rng.Next(4) == 0 ? ulong.MaxValue : (ulong)_rng.Next(0, 5),
            Argument = _rng.Next(4) == 0 ? (ulong)_rng.NextInt64() : 0,
        };
        int data = header.Kind == ReplicaFrameKind.Request && header.Operation == ReplicaOperation.Write && header.Length is > 0 and <= 64 * 1024 ? header.Length : 0;
        return Frame(header, data);
    }

    public byte[] Frame(in ReplicaFrameHeader header, int dataLength)
    {
        int sums = ReplicaFrameHeader.ChecksumCount(dataLength);
        byte[] frame = new byte[ReplicaFrameHeader.Size + dataLength + (4 * sums)];
        header.Write(frame);
        var data = frame.AsSpan(ReplicaFrameHeader.Size, dataLength);
        _rng.NextBytes(data);
        for (int i = 0; i < sums; i++)
        {
            int n = Math.Min(ReplicaGeometry.BlockSize, dataLength - (i * ReplicaGeometry.BlockSize));
            uint crc = IscsiDigest.Compute(data.Slice(i * ReplicaGeometry.BlockSize, n));
            if (_rng.Next(50) == 0)
            {
                crc ^= 1; // now and then a payload that fails its checksum (BadPayload, the connection goes on)
            }

            BinaryPrimitives.WriteUInt32LittleEndian(frame.AsSpan(ReplicaFrameHeader.Size + dataLength + (4 * i)), crc);
        }

        return frame;
    }
}
