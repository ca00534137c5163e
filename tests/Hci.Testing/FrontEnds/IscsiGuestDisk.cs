using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using Hci.Core.Blocks;
using Hci.Transport.Iscsi;
using Hci.Transport.Scsi;
using Xunit;

namespace Hci.Testing;

/// <summary>
/// The guest's view through iSCSI: the kit's <see cref="RawInitiator"/> logged in (with header and data digests) to
/// an <see cref="IscsiTarget"/> that exports the device as LUN 1. The geometry and features are what a SCSI
/// initiator learns (READ CAPACITY(16), the Block Limits page, MODE SENSE's write-protect bit); requests are READ(16),
/// WRITE(16) with R2T, SYNCHRONIZE CACHE(16), UNMAP and WRITE SAME(16) of a zero block. Sense data names the causes.
/// </summary>
internal sealed partial class IscsiGuestDisk : GuestDisk
{
    private readonly IscsiTarget _target;
    private readonly Socket _socket;
    private readonly RawInitiator _initiator;
    private int _blockSize;
    private long _blockCount;
    private int _maxTransferBlocks;
    private bool _readOnly;
    private bool _discard;
    private bool _writeSame;

    private IscsiGuestDisk(IscsiTarget target, Socket socket, RawInitiator initiator)
    {
        _target = target;
        _socket = socket;
        _initiator = initiator;
    }

    /// <inheritdoc/>
    public override int BlockSize => _blockSize;

    /// <inheritdoc/>
    public override long BlockCount => _blockCount;

    /// <inheritdoc/>
    public override int MaxTransferBlocks => _maxTransferBlocks;

    /// <inheritdoc/>
    public override bool ReadOnly => _readOnly;

    /// <inheritdoc/>
    public override bool OffersDiscard => _discard;

    /// <inheritdoc/>
    public override bool OffersWriteZeroes => _writeSame;

    /// <inheritdoc/>
    public override bool NamesCauses => true;

    /// <summary>Starts a target over <paramref name="device"/> on a loopback port, logs in, and learns the disk.</summary>
    /// <param name="device">The device to export as LUN 1; not disposed here.</param>
    /// <returns>The guest's disk.</returns>
    public static async Task<GuestDisk> ExportAsync(BlockDevice device)
    {
        var target = new IscsiTarget(
            new IscsiTargetOptions { Portal = "127.0.0.1:0", TargetName = RawInitiator.DefaultTarget },
            new Dictionary<int, ScsiDisk> { [1] = new ScsiDisk(device, "contract") });
        try
        {
            target.Start();
            var (socket, answer) = await Task.Run(() => RawInitiator.ConnectAndNegotiate(target.LocalEndPoint.Port, digests: true));
            var match = MaxRecvDataSegmentLength().Match(answer);
            var initiator = new RawInitiator(socket, digests: true) { TargetMaxRecvDataSegmentLength = match.Success ? int.Parse(match.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) : 8192 };
            var disk = new IscsiGuestDisk(target, socket, initiator);
            await Task.Run(disk.Learn);
            return disk;
        }
        catch
        {
            await target.DisposeAsync();
            throw;
        }
    }

    /// <inheritdoc/>
    public override Task<GuestStatus> ReadAsync(long lba, byte[] into) => Task.Run(() =>
    {
        var a = _initiator.Execute(Cdb16(0x88, lba, (uint)(into.Length / _blockSize)), null, into.Length);
        if (a.Status == ScsiStatus.Good)
        {
            Assert.Equal(into.Length, a.Data.Length);
            a.Data.CopyTo(into, 0);
        }

        return Status(a);
    });

    /// <inheritdoc/>
    public override Task<GuestStatus> WriteAsync(long lba, byte[] data)
        => Task.Run(() => Status(_initiator.Execute(Cdb16(0x8A, lba, (uint)(data.Length / _blockSize)), data)));

    /// <inheritdoc/>
    public override Task<GuestStatus> FlushAsync() => Task.Run(() => Status(_initiator.Execute(Cdb16(0x91, 0, 0), null)));

    /// <inheritdoc/>
    public override Task<GuestStatus> DiscardAsync(long lba, int blocks) => Task.Run(() =>
    {
        var list = new byte[24];
        BinaryPrimitives.WriteUInt16BigEndian(list, 22); // UNMAP data length
        BinaryPrimitives.WriteUInt16BigEndian(list.AsSpan(2), 16); // block descriptor data length: one descriptor
        BinaryPrimitives.WriteUInt64BigEndian(list.AsSpan(8), (ulong)lba);
        BinaryPrimitives.WriteUInt32BigEndian(list.AsSpan(16), (uint)blocks);
        var cdb = new byte[10];
        cdb[0] = 0x42;
        BinaryPrimitives.WriteUInt16BigEndian(cdb.AsSpan(7), (ushort)list.Length);
        return Status(_initiator.Execute(cdb, list));
    });

    /// <inheritdoc/>
    public override Task<GuestStatus> WriteZeroesAsync(long lba, int blocks)
        => Task.Run(() => Status(_initiator.Execute(Cdb16(0x93, lba, (uint)blocks), new byte[_blockSize])));

    /// <inheritdoc/>
    public override async ValueTask DisposeAsync()
    {
        await Task.Run(_initiator.Logout);
        _socket.Dispose();
        await _target.DisposeAsync();
    }

    /// <summary>What a SCSI initiator asks before it uses a disk.</summary>
    private void Learn()
    {
        var capacity = _initiator.Execute([0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0], null, 32);
        Assert.Equal(ScsiStatus.Good, capacity.Status);
        _blockCount = checked((long)BinaryPrimitives.ReadUInt64BigEndian(capacity.Data) + 1);
        _blockSize = (int)BinaryPrimitives.ReadUInt32BigEndian(capacity.Data.AsSpan(8));

        var limits = _initiator.Execute([0x12, 0x01, 0xB0, 0, 0x40, 0], null, 0x40); // Block Limits VPD page
        Assert.Equal(ScsiStatus.Good, limits.Status);
        _maxTransferBlocks = (int)Math.Min(BinaryPrimitives.ReadUInt32BigEndian(limits.Data.AsSpan(8)), int.MaxValue / _blockSize);
        _discard = BinaryPrimitives.ReadUInt32BigEndian(limits.Data.AsSpan(20)) > 0; // maximum unmap LBA count
        _writeSame = BinaryPrimitives.ReadUInt64BigEndian(limits.Data.AsSpan(36)) > 0; // maximum write same length

        var mode = _initiator.Execute([0x1A, 0x08, 0x3F, 0, 0xC0, 0], null, 0xC0); // MODE SENSE(6), all pages, no block descriptors
        Assert.Equal(ScsiStatus.Good, mode.Status);
        _readOnly = (mode.Data[2] & 0x80) != 0; // WP in the device-specific parameter
    }

    private static GuestStatus Status(RawInitiator.Answer a) => a switch
    {
        { Status: ScsiStatus.Good } => GuestStatus.Good,
        { Status: ScsiStatus.CheckCondition, SenseKey: 0x05, Asc: 0x21 } => GuestStatus.OutOfRange, // ILLEGAL REQUEST, LBA OUT OF RANGE
        { Status: ScsiStatus.CheckCondition, SenseKey: 0x07, Asc: 0x27 } => GuestStatus.WriteProtected, // DATA PROTECT, WRITE PROTECTED
        { Status: ScsiStatus.CheckCondition, SenseKey: 0x05, Asc: 0x20 } => GuestStatus.Unsupported, // INVALID COMMAND OPERATION CODE
        _ => GuestStatus.Error,
    };

    private static byte[] Cdb16(byte opcode, long lba, uint blocks)
    {
        var cdb = new byte[16];
        cdb[0] = opcode;
        BinaryPrimitives.WriteUInt64BigEndian(cdb.AsSpan(2), (ulong)lba);
        BinaryPrimitives.WriteUInt32BigEndian(cdb.AsSpan(10), blocks);
        return cdb;
    }

    [GeneratedRegex(@"MaxRecvDataSegmentLength=(\d+)")]
    private static partial Regex MaxRecvDataSegmentLength();
}
