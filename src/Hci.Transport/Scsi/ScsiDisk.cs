using System.Buffers.Binary;
using System.Text;
using Hci.Core.Blocks;

namespace Hci.Transport.Scsi;

/// <summary>
/// A SCSI disk logical unit (SPC-4 and SBC-3 commands) over any Hci <see cref="BlockDevice"/>, kept apart from
/// the iSCSI connection code. Every field of a CDB is untrusted: ranges are checked against the capacity and
/// refusals carry the sense key and additional sense code the standards name.
/// </summary>
/// <remarks>
/// This first cut runs each command through the device's asynchronous API; the zero-allocation data path
/// (requests on a reactor's queue) comes with the performance work.
/// </remarks>
public sealed partial class ScsiDisk
{

    // Most blocks one UNMAP descriptor or WRITE SAME covers (VPD B0h).
    private const uint MaxRangeBlocks = 0x40000;

    private readonly BlockDevice _device;
    private readonly int _blockSize;
    private readonly long _blocks;
    private readonly string _serial;
    private readonly byte[] _naa = new byte[16];
    private readonly SemaphoreSlim _compareAndWrite = new(1, 1);
    private volatile bool _writeCache = true;

    /// <summary>Creates the unit.</summary>
    /// <param name="device">The device; it must outlive the unit.</param>
    /// <param name="serial">Unit serial number (VPD page 80h, and the source of the NAA identifier).</param>
    public ScsiDisk(BlockDevice device, string serial)
    {
        _device = device ?? throw new ArgumentNullException(nameof(device));
        ArgumentException.ThrowIfNullOrEmpty(serial);
        _serial = serial.Length > 32 ? serial[..32] : serial;
        _blockSize = device.Geometry.LogicalBlockSize;
        _blocks = device.Geometry.BlockCount;

        // NAA 6 (IEEE registered extended) from a hash of the serial: stable across restarts.
        ulong hash = 14695981039346656037UL;
        foreach (char c in _serial)
        {
            hash = (hash ^ c) * 1099511628211UL;
        }

        _naa[0] = 0x60;
        BinaryPrimitives.WriteUInt64BigEndian(_naa.AsSpan(1), hash);
        _naa[9] = 0x48; // 'H'
        _naa[10] = 0x43; // 'C'
        _naa[11] = 0x49; // 'I'
    }

    /// <summary>The device.</summary>
    public BlockDevice Device => _device;

    /// <summary>Largest transfer in one command, in bytes.</summary>
    public int MaxTransferBytes => Math.Max(MaxCommandBytes / _blockSize * _blockSize, DeviceTransferBytes);

    // One command may move more than the device takes in one request: such a command runs in device-sized pieces.
    private const int MaxCommandBytes = 16 << 20;

    private int DeviceTransferBytes => Math.Max(_device.Geometry.MaxTransferBytes / _blockSize * _blockSize, _blockSize);

    // Most blocks one WRITE SAME covers (VPD B0h): 16 MiB of medium, so that one command's work stays bounded (and
    // an initiator that checks a large WRITE SAME by first writing the range with one WRITE can, within the transfer
    // limit the transport takes).
    private uint MaxWriteSameBlocks => (uint)Math.Clamp((16 << 20) / _blockSize, 1, MaxRangeBlocks);

    // Most blocks one COMPARE AND WRITE covers (VPD B0h; its CDB field is one byte, and the Data-Out holds twice that).
    private int MaxCompareBlocks => Math.Clamp(DeviceTransferBytes / _blockSize, 1, 255);

    /// <summary>Runs a command.</summary>
    /// <param name="task">The command; its status, sense and data length are set on return.</param>
    /// <returns>When done.</returns>
    internal async ValueTask ExecuteAsync(ScsiTask task)
    {
        ArgumentNullException.ThrowIfNull(task);
        task.Status = ScsiStatus.Good;
        task.DataLength = 0;
        byte[] cdb = task.Cdb;

        // A write counts itself in before it is admitted (see ScsiDisk.Atomic.cs) and out when it is done.
        task.WriteToken = WritesMedium(cdb[0]) ? EnterWrite(task.Nexus) : -1;
        try
        {
            if (Admit(task))
            {
                await Run(task, cdb);
            }
        }
        finally
        {
            LeaveWrite(task);
        }
    }

    private async ValueTask Run(ScsiTask task, byte[] cdb)
    {
        try
        {
            switch (cdb[0])
            {
                case ScsiOpcode.TestUnitReady:
                    return;
                case ScsiOpcode.StartStopUnit: // the medium is not removable and always ready; accepted
                    return;
                case ScsiOpcode.PreventAllowMediumRemoval: // nothing to lock, not removable
                    return;
                case ScsiOpcode.RequestSense:
                    RequestSense(task);
                    return;
                case ScsiOpcode.Inquiry:
                    Inquiry(task);
                    return;
                case ScsiOpcode.ReadCapacity10:
                    ReadCapacity10(task);
                    return;
                case ScsiOpcode.ServiceActionIn16 when (cdb[1] & ScsiServiceAction.Mask) == ScsiServiceAction.ReadCapacity16:
                    ReadCapacity16(task);
                    return;
                case ScsiOpcode.ServiceActionIn16 when (cdb[1] & ScsiServiceAction.Mask) == ScsiServiceAction.GetLbaStatus:
                    GetLbaStatus(task);
                    return;
                case ScsiOpcode.MaintenanceIn when (cdb[1] & ScsiServiceAction.Mask) == ScsiServiceAction.ReportSupportedOperationCodes:
                    ReportSupportedOperationCodes(task);
                    return;
                case ScsiOpcode.ServiceActionIn16:
                case ScsiOpcode.MaintenanceIn:
                    task.Fail(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb); // service action not supported
                    return;
                case ScsiOpcode.ModeSense6:
                case ScsiOpcode.ModeSense10:
                    ModeSense(task, cdb[0] == ScsiOpcode.ModeSense10);
                    return;
                case ScsiOpcode.ModeSelect6:
                case ScsiOpcode.ModeSelect10:
                    await ModeSelect(task, cdb[0] == ScsiOpcode.ModeSelect10);
                    return;
                case ScsiOpcode.Reserve6:
                case ScsiOpcode.Reserve10:
                    Reserve6(task);
                    return;
                case ScsiOpcode.Release6:
                case ScsiOpcode.Release10:
                    Release6(task);
                    return;
                case ScsiOpcode.PersistentReserveIn:
                    PersistentReserveIn(task);
                    return;
                case ScsiOpcode.PersistentReserveOut:
                    await PersistentReserveOut(task);
                    return;
                case ScsiOpcode.ReadDefectData10:
                case ScsiOpcode.ReadDefectData12:
                    ReadDefectData(task);
                    return;
                case ScsiOpcode.Read6:
                case ScsiOpcode.Read10:
                case ScsiOpcode.Read12:
                case ScsiOpcode.Read16:
                    await ReadWrite(task, write: false);
                    return;
                case ScsiOpcode.Write6:
                case ScsiOpcode.Write10:
                case ScsiOpcode.Write12:
                case ScsiOpcode.Write16:
                case ScsiOpcode.WriteAndVerify10:
                case ScsiOpcode.WriteAndVerify12:
                case ScsiOpcode.WriteAndVerify16:
                    await ReadWrite(task, write: true);
                    return;
                case ScsiOpcode.Verify10:
                case ScsiOpcode.Verify12:
                case ScsiOpcode.Verify16:
                    await Verify(task);
                    return;
                case ScsiOpcode.PreFetch10:
                case ScsiOpcode.PreFetch16:
                    PreFetch(task);
                    return;
                case ScsiOpcode.SynchronizeCache10:
                case ScsiOpcode.SynchronizeCache16:
                    if (_device.Supports(BlockDeviceCapabilities.Flush))
                    {
                        await _device.FlushAsync();
                    }

                    return;
                case ScsiOpcode.Unmap:
                    await Unmap(task);
                    return;
                case ScsiOpcode.WriteSame10:
                case ScsiOpcode.WriteSame16:
                    await WriteSame(task);
                    return;
                case ScsiOpcode.CompareAndWrite:
                    await CompareAndWrite(task);
                    return;
                case ScsiOpcode.OrWrite16:
                    await OrWrite(task);
                    return;
                case ScsiOpcode.WriteAtomic16:
                    await WriteAtomic(task);
                    return;
                default:
                    task.Fail(SenseKey.IllegalRequest, Asc.InvalidCommandOperationCode);
                    return;
            }
        }
        catch (BlockDeviceException e)
        {
            var (key, asc) = ScsiDeviceErrors.SenseFor(e);
            task.Fail(key, asc);
        }
    }

    private static void Reply(ScsiTask task, ReadOnlySpan<byte> data)
    {
        // What the initiator asked for in the CDB bounds the data; less than that is not an overflow.
        int allocation = task.Cdb[0] switch
        {
            ScsiOpcode.Inquiry => AllocationLength(task.Cdb, 3, 2),
            ScsiOpcode.ModeSense6 or ScsiOpcode.RequestSense => task.Cdb[4],
            ScsiOpcode.ModeSense10 => AllocationLength(task.Cdb, 7, 2),
            ScsiOpcode.ServiceActionIn16 => AllocationLength(task.Cdb, 10, 4), // READ CAPACITY 16, GET LBA STATUS
            ScsiOpcode.PersistentReserveIn or ScsiOpcode.ReadDefectData10 => AllocationLength(task.Cdb, 7, 2),
            ScsiOpcode.MaintenanceIn or ScsiOpcode.ReadDefectData12 => AllocationLength(task.Cdb, 6, 4), // REPORT SUPPORTED OPERATION CODES
            _ => int.MaxValue,
        };
        data = data[..Math.Min(data.Length, allocation)];
        int n = Math.Min(data.Length, Math.Min(task.ExpectedLength, task.Buffer?.Length ?? 0));
        if (n > 0)
        {
            data[..n].CopyTo(task.Buffer!.Span);
        }

        task.DataLength = data.Length;
    }

    private static int AllocationLength(byte[] cdb, int offset, int size) => size == 2 ? BinaryPrimitives.ReadUInt16BigEndian(cdb.AsSpan(offset)) : (int)Math.Min(BinaryPrimitives.ReadUInt32BigEndian(cdb.AsSpan(offset)), int.MaxValue);

    private void Inquiry(ScsiTask task)
    {
        byte[] cdb = task.Cdb;
        bool evpd = (cdb[1] & CdbFlags.EnableVpd) != 0;
        byte page = cdb[2];
        if ((cdb[1] & 0xFE) != 0 || (!evpd && page != 0))
        {
            task.Fail(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
            return;
        }

        Span<byte> d = stackalloc byte[96];
        d.Clear();
        if (!evpd)
        {
            d[2] = 0x06; // SPC-4
            d[3] = 0x12; // HiSup, response data format 2
            d[4] = 66 - 5;
            d[7] = 0x02; // CmdQue
            Encoding.ASCII.GetBytes("HCI     ").CopyTo(d[8..]);
            Encoding.ASCII.GetBytes("HCI DISK        ").CopyTo(d[16..]);
            Encoding.ASCII.GetBytes("0001").CopyTo(d[32..]);
            BinaryPrimitives.WriteUInt16BigEndian(d[58..], 0x00A0); // SAM-5
            BinaryPrimitives.WriteUInt16BigEndian(d[60..], 0x0960); // iSCSI
            BinaryPrimitives.WriteUInt16BigEndian(d[62..], 0x0460); // SPC-4
            BinaryPrimitives.WriteUInt16BigEndian(d[64..], 0x04C0); // SBC-3
            Reply(task, d[..66]);
            return;
        }

        d[1] = page;
        int length;
        switch (page)
        {
            case VpdPage.SupportedPages:
                ReadOnlySpan<byte> pages = [VpdPage.SupportedPages, VpdPage.UnitSerialNumber, VpdPage.DeviceIdentification, VpdPage.BlockLimits, VpdPage.BlockDeviceCharacteristics, VpdPage.LogicalBlockProvisioning];
                pages.CopyTo(d[4..]);
                length = pages.Length;
                break;
            case VpdPage.UnitSerialNumber:
                length = Encoding.ASCII.GetBytes(_serial, d[4..]);
                break;
            case VpdPage.DeviceIdentification:
            {
                // NAA designator for the unit, then a T10 vendor id designator.
                var p = d[4..];
                p[0] = 0x01; // binary
                p[1] = 0x03; // association: LU, type: NAA
                p[3] = 16;
                _naa.CopyTo(p[4..]);
                p = p[20..];
                p[0] = 0x02; // ASCII
                p[1] = 0x01; // T10 vendor id
                Encoding.ASCII.GetBytes("HCI     ").CopyTo(p[4..]);
                int n = Encoding.ASCII.GetBytes(_serial, p[12..]);
                p[3] = (byte)(8 + n);
                length = 20 + 4 + 8 + n;
                break;
            }

            case VpdPage.BlockLimits:
            {
                length = 0x3C;
                uint maxBlocks = (uint)(MaxTransferBytes / _blockSize);
                d[5] = (byte)MaxCompareBlocks; // maximum compare and write length
                BinaryPrimitives.WriteUInt32BigEndian(d[8..], maxBlocks); // maximum transfer length
                BinaryPrimitives.WriteUInt32BigEndian(d[12..], maxBlocks); // optimal transfer length
                if (_device.Supports(BlockDeviceCapabilities.Discard))
                {
                    BinaryPrimitives.WriteUInt32BigEndian(d[20..], MaxRangeBlocks); // maximum unmap LBA count
                    BinaryPrimitives.WriteUInt32BigEndian(d[24..], 64); // maximum unmap block descriptors
                    BinaryPrimitives.WriteUInt32BigEndian(d[28..], 1); // optimal unmap granularity
                }

                BinaryPrimitives.WriteUInt64BigEndian(d[36..], MaxWriteSameBlocks); // maximum write same length
                BinaryPrimitives.WriteUInt32BigEndian(d[44..], MaxAtomicBlocks); // maximum atomic transfer length
                BinaryPrimitives.WriteUInt32BigEndian(d[48..], AtomicAlignment); // atomic alignment
                BinaryPrimitives.WriteUInt32BigEndian(d[52..], AtomicGranularity); // atomic transfer length granularity
                // Maximum atomic transfer length with atomic boundary and maximum atomic boundary size stay 0: no
                // atomic boundaries (a WRITE ATOMIC with a non-zero ATOMIC BOUNDARY is refused).
                break;
            }

            case VpdPage.BlockDeviceCharacteristics:
                length = 0x3C;
                BinaryPrimitives.WriteUInt16BigEndian(d[4..], 0x0001); // non-rotating medium
                break;
            case VpdPage.LogicalBlockProvisioning:
                length = 4;
                if (_device.Supports(BlockDeviceCapabilities.Discard))
                {
                    d[5] = 0xE0; // LBPU, LBPWS, LBPWS10
                    d[6] = 0x02; // thin provisioned
                }

                break;
            default:
                task.Fail(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
                return;
        }

        BinaryPrimitives.WriteUInt16BigEndian(d[2..], (ushort)length);
        Reply(task, d[..(4 + length)]);
    }

    private void ReadCapacity10(ScsiTask task)
    {
        Span<byte> d = stackalloc byte[8];
        BinaryPrimitives.WriteUInt32BigEndian(d, (uint)Math.Min(_blocks - 1, uint.MaxValue));
        BinaryPrimitives.WriteUInt32BigEndian(d[4..], (uint)_blockSize);
        Reply(task, d);
    }

    private void ReadCapacity16(ScsiTask task)
    {
        Span<byte> d = stackalloc byte[32];
        d.Clear();
        BinaryPrimitives.WriteUInt64BigEndian(d, (ulong)(_blocks - 1));
        BinaryPrimitives.WriteUInt32BigEndian(d[8..], (uint)_blockSize);
        if (_device.Supports(BlockDeviceCapabilities.Discard))
        {
            d[14] = (byte)(0x80 | (_device.Supports(BlockDeviceCapabilities.DiscardZeroesData) ? 0x40 : 0)); // LBPME, LBPRZ
        }

        Reply(task, d);
    }

    private void ModeSense(ScsiTask task, bool ten)
    {
        byte[] cdb = task.Cdb;
        int page = cdb[2] & ModePage.CodeMask;
        int control = cdb[2] >> 6; // 0 current, 1 changeable, 2 default, 3 saved
        if (control == 3)
        {
            task.Fail(SenseKey.IllegalRequest, Asc.SavingParametersNotSupported); // SAVING PARAMETERS NOT SUPPORTED
            return;
        }

        Span<byte> pages = stackalloc byte[64];
        int n = ModePages(pages, page, control);
        if (n == 0)
        {
            task.Fail(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
            return;
        }

        // Device-specific parameter: WP when read-only; DPOFUA, since DPO and FUA are accepted (FUA is honoured).
        byte wp = (byte)((_device.Supports(BlockDeviceCapabilities.ReadOnly) ? 0x80 : 0) | 0x10);
        Span<byte> d = stackalloc byte[72];
        d.Clear();
        int header = ten ? 8 : 4;
        if (ten)
        {
            BinaryPrimitives.WriteUInt16BigEndian(d, (ushort)(header + n - 2));
            d[3] = wp;
        }
        else
        {
            d[0] = (byte)(header + n - 1);
            d[2] = wp;
        }

        pages[..n].CopyTo(d[header..]);
        Reply(task, d[..(header + n)]);
    }

    // The mode pages this unit has (caching, control, informational exceptions control) as MODE SENSE shows them:
    // page code 3Fh for all; control 0 current, 1 changeable, 2 default. Returns the bytes written (0: no such page).
    private int ModePages(Span<byte> pages, int page, int control)
    {
        pages[..64].Clear();
        int n = 0;
        if (page is ModePage.Caching or ModePage.AllPages)
        {
            pages[n] = ModePage.Caching;
            pages[n + 1] = 0x12;
            pages[n + 2] = control == 0 && !_writeCache ? (byte)0 : ModePage.WriteCacheEnable; // changeable, on by default
            n += 20;
        }

        if (page is ModePage.Control or ModePage.AllPages)
        {
            pages[n] = ModePage.Control;
            pages[n + 1] = 0x0A;
            if (control != 1)
            {
                pages[n + 2] = 0x02; // GLTSD
                pages[n + 3] = 0x10; // unrestricted reordering
            }

            n += 12;
        }

        if (page is ModePage.InformationalExceptionsControl or ModePage.AllPages)
        {
            pages[n] = ModePage.InformationalExceptionsControl;
            pages[n + 1] = 0x0A;
            n += 12;
        }

        return n;
    }

    /// <summary>
    /// MODE SELECT (6, 10): the one changeable field, the caching page's WCE, is applied; anything else must match
    /// what MODE SENSE reports (else INVALID FIELD IN PARAMETER LIST), and saving pages is refused. With the write
    /// cache off every write is written through (FUA, or a flush before GOOD); turning it off flushes the device.
    /// </summary>
    private async ValueTask ModeSelect(ScsiTask task, bool ten)
    {
        byte[] cdb = task.Cdb;
        int listLength = ten ? BinaryPrimitives.ReadUInt16BigEndian(cdb.AsSpan(7)) : cdb[4];
        if ((cdb[1] & 0x01) != 0 || (cdb[1] & 0xEE) != 0)
        {
            task.Fail(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb); // SP (saving not supported), reserved bits
            return;
        }

        if (listLength == 0)
        {
            return; // nothing to change
        }

        if (task.Buffer == null || task.ExpectedLength < listLength || task.Buffer.Length < listLength)
        {
            task.Fail(SenseKey.IllegalRequest, Asc.ParameterListLengthError);
            return;
        }

        var list = task.Buffer.Span[..listLength];
        int header = ten ? 8 : 4;
        if (listLength < header)
        {
            task.Fail(SenseKey.IllegalRequest, Asc.ParameterListLengthError);
            return;
        }

        // Block descriptors: none, or ones that restate the capacity and block size (nothing about them changes).
        int descriptors = ten ? BinaryPrimitives.ReadUInt16BigEndian(list[6..]) : list[3];
        if (ten && (list[4] & 0x01) != 0)
        {
            task.Fail(SenseKey.IllegalRequest, Asc.InvalidFieldInParameterList); // LONGLBA: not supported
            return;
        }

        if (descriptors % 8 != 0 || header + descriptors > listLength)
        {
            task.Fail(SenseKey.IllegalRequest, Asc.ParameterListLengthError);
            return;
        }

        for (int at = header; at < header + descriptors; at += 8)
        {
            uint size = BinaryPrimitives.ReadUInt32BigEndian(list[(at + 4)..]) & 0xFFFFFF;
            if (size != (uint)_blockSize)
            {
                task.Fail(SenseKey.IllegalRequest, Asc.InvalidFieldInParameterList);
                return;
            }
        }

        // Check every page before applying any.
        bool? wce = null;
        Span<byte> current = stackalloc byte[64];
        for (int at = header + descriptors; at < listLength;)
        {
            if (listLength - at < 2 || at + 2 + list[at + 1] > listLength)
            {
                task.Fail(SenseKey.IllegalRequest, Asc.ParameterListLengthError);
                return;
            }

            var page = list.Slice(at, 2 + list[at + 1]);
            int code = page[0] & ModePage.CodeMask;
            int n = code == ModePage.AllPages || (page[0] & ModePage.SubPageFormat) != 0 ? 0 : ModePages(current, code, control: 0); // no subpages
            if (n == 0 || page.Length != n)
            {
                task.Fail(SenseKey.IllegalRequest, Asc.InvalidFieldInParameterList);
                return;
            }

            // PS (bit 7 of byte 0) is reserved in MODE SELECT; WCE may differ, nothing else may.
            bool wceSet = code == ModePage.Caching && (page[2] & ModePage.WriteCacheEnable) != 0;
            if (code == ModePage.Caching)
            {
                current[2] = (byte)((current[2] & ~ModePage.WriteCacheEnable) | (page[2] & ModePage.WriteCacheEnable));
            }

            if ((page[0] & ModePage.ParametersSaveable) != 0 || !page[1..].SequenceEqual(current[1..n]))
            {
                task.Fail(SenseKey.IllegalRequest, Asc.InvalidFieldInParameterList);
                return;
            }

            if (code == ModePage.Caching)
            {
                wce = wceSet;
            }

            at += page.Length;
        }

        if (wce is bool on && on != _writeCache)
        {
            _writeCache = on;
            if (!on && _device.Supports(BlockDeviceCapabilities.Flush))
            {
                await _device.FlushAsync(); // what the cache held is on the medium before GOOD
            }
        }
    }

    private bool Range(ScsiTask task, ulong lba, ulong blocks)
    {
        if (lba > (ulong)_blocks || blocks > (ulong)_blocks - lba)
        {
            task.Fail(SenseKey.IllegalRequest, Asc.LbaOutOfRange);
            return false;
        }

        return true;
    }

    private static (ulong Lba, ulong Blocks, byte Flags) Decode(byte[] cdb) => cdb[0] switch
    {
        ScsiOpcode.Read6 or ScsiOpcode.Write6 => ((ulong)(((cdb[1] & 0x1F) << 16) | (cdb[2] << 8) | cdb[3]), cdb[4] == 0 ? 256UL : cdb[4], 0),
        ScsiOpcode.Read10 or ScsiOpcode.Write10 or ScsiOpcode.WriteAndVerify10 or ScsiOpcode.Verify10 or ScsiOpcode.PreFetch10 or ScsiOpcode.WriteSame10
            => (BinaryPrimitives.ReadUInt32BigEndian(cdb.AsSpan(2)), BinaryPrimitives.ReadUInt16BigEndian(cdb.AsSpan(7)), cdb[1]),
        ScsiOpcode.Read12 or ScsiOpcode.Write12 or ScsiOpcode.WriteAndVerify12 or ScsiOpcode.Verify12 => (BinaryPrimitives.ReadUInt32BigEndian(cdb.AsSpan(2)), BinaryPrimitives.ReadUInt32BigEndian(cdb.AsSpan(6)), cdb[1]),
        _ => (BinaryPrimitives.ReadUInt64BigEndian(cdb.AsSpan(2)), BinaryPrimitives.ReadUInt32BigEndian(cdb.AsSpan(10)), cdb[1]),
    };

    // No protection information here: any RDPROTECT/WRPROTECT/VRPROTECT value but 0 is refused (SBC-3).
    private static bool ProtectField(ScsiTask task)
    {
        if (task.Cdb[0] is not (ScsiOpcode.Read6 or ScsiOpcode.Write6) && (task.Cdb[1] & CdbFlags.Protect) != 0)
        {
            task.Fail(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
            return true;
        }

        return false;
    }

    private async ValueTask ReadWrite(ScsiTask task, bool write)
    {
        if (!CheckTransfer(task, write, out long offset, out int length, out byte flags) || length == 0)
        {
            return;
        }

        var memory = task.Buffer!.Memory[..length];
        if (write && !await AwaitAtomicAsync(task, offset, length))
        {
            return;
        }

        if (write)
        {
            // WRITE AND VERIFY: what is verified must be on the medium, so it is written through.
            await WriteThrough(offset, memory, fua: (flags & CdbFlags.ForceUnitAccess) != 0 || task.Cdb[0] is ScsiOpcode.WriteAndVerify10 or ScsiOpcode.WriteAndVerify12 or ScsiOpcode.WriteAndVerify16);
        }
        else
        {
            await ReadInPieces(offset, memory);
        }
    }

    private async ValueTask ReadInPieces(long offset, Memory<byte> memory)
    {
        for (int done = 0; done < memory.Length; done += DeviceTransferBytes)
        {
            await _device.ReadAsync(offset + done, memory.Slice(done, Math.Min(DeviceTransferBytes, memory.Length - done)));
        }
    }

    private async ValueTask WriteInPieces(long offset, ReadOnlyMemory<byte> memory, BlockRequestFlags flags)
    {
        for (int done = 0; done < memory.Length; done += DeviceTransferBytes)
        {
            await _device.WriteAsync(offset + done, memory.Slice(done, Math.Min(DeviceTransferBytes, memory.Length - done)), flags);
        }
    }

    private async ValueTask Verify(ScsiTask task)
    {
        var (lba, blocks, flags) = Decode(task.Cdb);
        if (ProtectField(task) || !Range(task, lba, blocks))
        {
            return;
        }

        // BYTCHK 00b: check the medium only (it reads back); 01b: compare with the Data-Out; 11b: compare every
        // block with the one block of Data-Out; 10b is reserved.
        int bytchk = (flags >> 1) & 0x3;
        if (bytchk == 2)
        {
            task.Fail(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
            return;
        }

        if (bytchk == 0 || blocks == 0)
        {
            return;
        }

        long bytes = (long)blocks * _blockSize;
        int dataOut = bytchk == 1 ? (int)Math.Min(bytes, int.MaxValue) : _blockSize;
        if (bytes > MaxTransferBytes || task.Buffer == null || task.ExpectedLength < dataOut || task.Buffer.Length < dataOut)
        {
            task.Fail(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
            return;
        }

        // The medium is read and compared in bounded pieces: one command never holds more than ScratchBytes.
        long offset = (long)lba * _blockSize;
        int piece = (int)Math.Min(bytes, ScratchBytes);
        using var medium = Scratch(piece);
        var expected = task.Buffer.Memory[..dataOut];
        for (long at = 0; at < bytes; at += piece)
        {
            int n = (int)Math.Min(piece, bytes - at);
            await ReadInPieces(offset + at, medium.Memory[..n]);
            for (int block = 0; block < n; block += Math.Min(dataOut, n))
            {
                int size = Math.Min(dataOut, n - block);
                var want = bytchk == 1 ? expected.Span.Slice((int)(at + block), size) : expected.Span[..size];
                int same = medium.Span.Slice(block, size).CommonPrefixLength(want);
                if (same < size)
                {
                    task.Fail(SenseKey.Miscompare, Asc.MiscompareDuringVerify, (uint)(at + block + same));
                    return;
                }
            }
        }
    }

    // Most bytes of medium one command reads into a buffer of its own at once (VERIFY, ORWRITE, WRITE SAME).
    private int ScratchBytes => Math.Max(1 << 20, _blockSize);

    private int _largestScratch;

    /// <summary>The largest scratch buffer any command has taken so far (diagnostics, tests).</summary>
    internal int LargestScratchBytes => Volatile.Read(ref _largestScratch);

    private Hci.Core.Buffers.AlignedBuffer Scratch(int length)
    {
        int seen;
        while (length > (seen = Volatile.Read(ref _largestScratch)) && Interlocked.CompareExchange(ref _largestScratch, length, seen) != seen)
        {
        }

        return new Hci.Core.Buffers.AlignedBuffer(length);
    }

    private async ValueTask Unmap(ScsiTask task)
    {
        if (task.Buffer == null || task.ExpectedLength < 8)
        {
            return; // an empty parameter list unmaps nothing
        }

        var list = task.Buffer.Memory[..task.ExpectedLength];
        int descriptors = BinaryPrimitives.ReadUInt16BigEndian(list.Span[2..]);
        if (descriptors % 16 != 0 || 8 + descriptors > list.Length)
        {
            task.Fail(SenseKey.IllegalRequest, Asc.ParameterListLengthError);
            return;
        }

        if (_device.Supports(BlockDeviceCapabilities.ReadOnly))
        {
            task.Fail(SenseKey.DataProtect, Asc.WriteProtected);
            return;
        }

        for (int i = 0; i < descriptors / 16; i++)
        {
            var d = list.Span.Slice(8 + (i * 16), 16);
            ulong lba = BinaryPrimitives.ReadUInt64BigEndian(d);
            uint count = BinaryPrimitives.ReadUInt32BigEndian(d[8..]);
            if (lba > (ulong)_blocks || count > (ulong)_blocks - lba)
            {
                task.Fail(SenseKey.IllegalRequest, Asc.LbaOutOfRange);
                return;
            }
        }

        for (int i = 0; i < descriptors / 16; i++)
        {
            ulong lba = BinaryPrimitives.ReadUInt64BigEndian(list.Span[(8 + (i * 16))..]);
            uint count = BinaryPrimitives.ReadUInt32BigEndian(list.Span[(16 + (i * 16))..]);
            if (count == 0)
            {
                continue;
            }

            if (_device.Supports(BlockDeviceCapabilities.Discard))
            {
                if (!await AwaitAtomicAsync(task, (long)lba * _blockSize, (long)count * _blockSize))
                {
                    return;
                }

                await _device.DiscardAsync((long)lba * _blockSize, (long)count * _blockSize);
            }
        }
    }

    private async ValueTask WriteSame(ScsiTask task)
    {
        var (lba, blocks, flags) = Decode(task.Cdb);
        if (ProtectField(task))
        {
            return;
        }

        // ANCHOR is not supported (ANC_SUP is 0), nor NDOB (WRITE SAME 16 only; bit 0 is obsolete in the 10).
        if ((flags & CdbFlags.Anchor) != 0 || (task.Cdb[0] == ScsiOpcode.WriteSame16 && (flags & CdbFlags.NoDataOutBuffer) != 0))
        {
            task.Fail(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
            return;
        }

        if (blocks == 0)
        {
            // Zero blocks: to the end of the medium (WSNZ is 0).
            if (lba >= (ulong)_blocks)
            {
                task.Fail(SenseKey.IllegalRequest, Asc.LbaOutOfRange);
                return;
            }

            blocks = (ulong)_blocks - lba;
        }

        if (!Range(task, lba, blocks))
        {
            return;
        }

        if (blocks > MaxWriteSameBlocks)
        {
            task.Fail(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
            return;
        }

        // The Data-Out is exactly one block.
        if (task.Buffer == null || task.ExpectedLength != _blockSize || task.Buffer.Length < _blockSize)
        {
            task.Fail(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
            return;
        }

        if (_device.Supports(BlockDeviceCapabilities.ReadOnly))
        {
            task.Fail(SenseKey.DataProtect, Asc.WriteProtected);
            return;
        }

        var block = task.Buffer.Memory[.._blockSize];
        bool zero = block.Span.IndexOfAnyExcept((byte)0) < 0;
        long offset = (long)lba * _blockSize;
        long length = (long)blocks * _blockSize;

        if (!await AwaitAtomicAsync(task, offset, length))
        {
            return;
        }

        // UNMAP set with a block of zeros: the blocks are unmapped where the device can, and then read back as zeros
        // (LBPRZ). With any other block the pattern is written: an unmapped block would not read back as that block.
        if (zero && (flags & CdbFlags.Unmap) != 0 && _device.Supports(BlockDeviceCapabilities.Discard | BlockDeviceCapabilities.DiscardZeroesData))
        {
            try
            {
                await _device.DiscardAsync(offset, length);
                return;
            }
            catch (BlockDeviceException)
            {
                // The file system would not punch the hole: write zeros instead.
            }
        }

        if (zero && _device.Supports(BlockDeviceCapabilities.WriteZeroes))
        {
            try
            {
                await _device.WriteZeroesAsync(offset, length);
                return;
            }
            catch (BlockDeviceException)
            {
                // Not every file system zeroes a range (tmpfs has no FALLOC_FL_ZERO_RANGE): write the zeros.
            }
        }

        int chunkBlocks = (int)Math.Min(blocks, (ulong)Math.Max(1, Math.Min(DeviceTransferBytes, 1 << 20) / _blockSize));
        using var pattern = Scratch(chunkBlocks * _blockSize);
        for (int i = 0; i < chunkBlocks; i++)
        {
            block.Span.CopyTo(pattern.Span[(i * _blockSize)..]);
        }

        for (long done = 0; done < length;)
        {
            int n = (int)Math.Min(pattern.Length, length - done);
            await _device.WriteAsync(offset + done, pattern.Memory[..n]);
            done += n;
        }
    }

    private async ValueTask CompareAndWrite(ScsiTask task)
    {
        ulong lba = BinaryPrimitives.ReadUInt64BigEndian(task.Cdb.AsSpan(2));
        int blocks = task.Cdb[13];
        if (ProtectField(task))
        {
            return;
        }

        // The Data-Out holds the verify data then the write data: exactly twice the blocks named.
        long bytes = (long)blocks * _blockSize;
        if (blocks > MaxCompareBlocks || task.ExpectedLength != 2 * bytes || (blocks > 0 && (task.Buffer == null || task.Buffer.Length < 2 * bytes)))
        {
            task.Fail(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
            return;
        }

        if (!Range(task, lba, (ulong)blocks) || blocks == 0)
        {
            return;
        }

        if (_device.Supports(BlockDeviceCapabilities.ReadOnly))
        {
            task.Fail(SenseKey.DataProtect, Asc.WriteProtected);
            return;
        }

        int length = (int)bytes;
        long offset = (long)lba * _blockSize;
        await _compareAndWrite.WaitAsync();
        try
        {
            // Atomic against every write that overlaps it, from any nexus: those already admitted finish first.
            await ExcludeWritesAsync(offset, length);
            if (!StillAdmitted(task))
            {
                return;
            }

            using var medium = Scratch(length);
            await ReadInPieces(offset, medium.Memory);
            int same = medium.Span.CommonPrefixLength(task.Buffer!.Span[..length]);
            if (same < length)
            {
                // SBC-3 5.2: the INFORMATION field holds the offset of the first byte that differs.
                task.Fail(SenseKey.Miscompare, Asc.MiscompareDuringVerify, (uint)same);
                return;
            }

            task.Buffer.Span.Slice(length, length).CopyTo(medium.Span);
            await WriteThrough(offset, medium.Memory, (task.Cdb[1] & CdbFlags.ForceUnitAccess) != 0);
        }
        finally
        {
            EndExclusion();
            _compareAndWrite.Release();
        }
    }

    // ORWRITE (16): each block becomes the OR of what is there and the Data-Out, atomically against COMPARE AND WRITE.
    private async ValueTask OrWrite(ScsiTask task)
    {
        var (lba, blocks, flags) = Decode(task.Cdb);
        if (ProtectField(task) || !Range(task, lba, blocks))
        {
            return;
        }

        long bytes = (long)blocks * _blockSize;
        if (bytes > MaxTransferBytes)
        {
            task.Fail(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
            return;
        }

        task.DataLength = (int)bytes;
        if (bytes == 0)
        {
            return;
        }

        if (_device.Supports(BlockDeviceCapabilities.ReadOnly))
        {
            task.Fail(SenseKey.DataProtect, Asc.WriteProtected);
            return;
        }

        if (task.Buffer == null || task.ExpectedLength < bytes || task.Buffer.Length < bytes)
        {
            task.Fail(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
            return;
        }

        int length = (int)bytes;
        long offset = (long)lba * _blockSize;
        await _compareAndWrite.WaitAsync();
        try
        {
            await ExcludeWritesAsync(offset, length);
            if (!StillAdmitted(task))
            {
                return;
            }

            int piece = Math.Min(length, ScratchBytes);
            using var medium = Scratch(piece);
            for (int at = 0; at < length; at += piece)
            {
                int n = Math.Min(piece, length - at);
                await ReadInPieces(offset + at, medium.Memory[..n]);
                var m = medium.Span[..n];
                var d = task.Buffer.Span.Slice(at, n);
                for (int i = 0; i < n; i++)
                {
                    m[i] |= d[i];
                }

                await WriteThrough(offset + at, medium.Memory[..n], (flags & CdbFlags.ForceUnitAccess) != 0);
            }
        }
        finally
        {
            EndExclusion();
            _compareAndWrite.Release();
        }
    }

    private async ValueTask WriteThrough(long offset, ReadOnlyMemory<byte> data, bool fua)
    {
        fua |= !_writeCache;
        var requestFlags = fua && _device.Supports(BlockDeviceCapabilities.ForceUnitAccess) ? BlockRequestFlags.ForceUnitAccess : BlockRequestFlags.None;
        await WriteInPieces(offset, data, requestFlags);
        if (fua && requestFlags == BlockRequestFlags.None && _device.Supports(BlockDeviceCapabilities.Flush))
        {
            await _device.FlushAsync();
        }
    }

    private void PreFetch(ScsiTask task)
    {
        var (lba, blocks, _) = Decode(task.Cdb);
        if ((task.Cdb[1] & 0xF8) != 0)
        {
            task.Fail(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
            return;
        }

        // Nothing is cached here, so there is nothing to load: GOOD (CONDITION MET would promise a cache).
        Range(task, lba, blocks);
    }

    private void RequestSense(ScsiTask task)
    {
        Span<byte> d = stackalloc byte[ScsiTask.FixedSenseLength];
        if (_reservations.TakeAttention(task.Nexus) is Asc ua)
        {
            ScsiTask.WriteSense(d, SenseKey.UnitAttention, ua);
        }
        else
        {
            ScsiTask.WriteSense(d, SenseKey.NoSense, Asc.None);
        }

        Reply(task, d);
    }

    private void ReadDefectData(ScsiTask task)
    {
        // No defect list is kept: an empty list in the format asked for (PLIST, GLIST and format echoed).
        Span<byte> d = stackalloc byte[8];
        d.Clear();
        if (task.Cdb[0] == ScsiOpcode.ReadDefectData10)
        {
            d[1] = (byte)(task.Cdb[2] & 0x1F);
            Reply(task, d[..4]);
        }
        else
        {
            d[1] = (byte)(task.Cdb[1] & 0x1F);
            Reply(task, d);
        }
    }

    private void GetLbaStatus(ScsiTask task)
    {
        ulong lba = BinaryPrimitives.ReadUInt64BigEndian(task.Cdb.AsSpan(2));
        if (lba >= (ulong)_blocks)
        {
            task.Fail(SenseKey.IllegalRequest, Asc.LbaOutOfRange);
            return;
        }

        // Unmapped blocks are not tracked: one descriptor from the LBA asked for, status 0 ("mapped or unknown",
        // SBC-3 table 58), which is true of every block.
        Span<byte> d = stackalloc byte[24];
        d.Clear();
        BinaryPrimitives.WriteUInt32BigEndian(d, 20);
        BinaryPrimitives.WriteUInt64BigEndian(d[8..], lba);
        BinaryPrimitives.WriteUInt32BigEndian(d[16..], (uint)Math.Min((ulong)_blocks - lba, uint.MaxValue));
        Reply(task, d);
    }
}
