using System.Buffers.Binary;

namespace Hci.Transport.Scsi;

/// <summary>
/// A SCSI target device's logical units by number, and the answers that belong to the target rather than to any
/// one unit (SPC-4 and SAM-5): REPORT LUNS, whichever LUN it is sent to, and the answers for a LUN that does not
/// exist. Any SCSI transport routes commands through it; it knows nothing of sockets.
/// </summary>
/// <remarks>
/// <para>LUNs are 0 to 16383, encoded in the 8-byte LUN field with peripheral device addressing (00b, up to 255) or flat
/// space addressing (01b) as SAM-5 4.7 describes; any other encoding names no unit here.</para>
/// <para>Units may be added and removed while commands run: each change publishes a new immutable snapshot and bumps
/// <see cref="Version"/>, so a reader sees one whole map and a transport can tell, with one read, that it changed.</para>
/// </remarks>
internal sealed class ScsiLunMap
{
    /// <summary>Largest LUN that flat space addressing can name.</summary>
    public const int MaxLun = 0x3FFF;

    // INQUIRY to an absent LUN: peripheral qualifier 011b (no unit can be there), device type 1Fh (unknown).
    private const byte NoUnitPeripheral = 0x7F;
    private const int StandardInquiryLength = 36;

    // LUN field address methods (SAM-5 4.7.2), in the top two bits of its first byte.
    private const int PeripheralAddressing = 0;
    private const int FlatSpaceAddressing = 1;
    private const ushort FlatSpaceMarker = 0x4000;

    private readonly Lock _changes = new();
    private volatile Snapshot _current;
    private volatile int _version;

    /// <summary>Creates the map.</summary>
    /// <param name="units">The units by LUN (0 to <see cref="MaxLun"/>).</param>
    public ScsiLunMap(IReadOnlyDictionary<int, ScsiDisk> units)
    {
        ArgumentNullException.ThrowIfNull(units);
        foreach (int lun in units.Keys)
        {
            CheckLun(lun, nameof(units));
        }

        _current = new Snapshot(new Dictionary<int, ScsiDisk>(units));
    }

    /// <summary>The LUNs, in ascending order (a snapshot).</summary>
    public IReadOnlyList<int> Luns => _current.Sorted;

    /// <summary>The units by LUN (a snapshot: later changes do not show in it).</summary>
    public IReadOnlyDictionary<int, ScsiDisk> Units => _current.Units;

    /// <summary>One more on every change of the units.</summary>
    public int Version => _version;

    /// <summary>The unit at a LUN; null when there is none.</summary>
    /// <param name="lun">The LUN (as <see cref="Decode"/> returns it; negative names none).</param>
    /// <returns>The unit.</returns>
    public ScsiDisk? Find(int lun) => lun >= 0 ? _current.Units.GetValueOrDefault(lun) : null;

    /// <summary>Adds a unit at a free LUN.</summary>
    /// <param name="lun">The LUN (0 to <see cref="MaxLun"/>).</param>
    /// <param name="unit">The unit.</param>
    /// <returns>False when the LUN is taken.</returns>
    public bool TryAdd(int lun, ScsiDisk unit)
    {
        ArgumentNullException.ThrowIfNull(unit);
        CheckLun(lun, nameof(lun));
        lock (_changes)
        {
            if (_current.Units.ContainsKey(lun))
            {
                return false;
            }

            _current = new Snapshot(new Dictionary<int, ScsiDisk>(_current.Units) { [lun] = unit });
            _version++;
            return true;
        }
    }

    /// <summary>Removes the unit at a LUN: commands that reach the LUN from now on are answered as for no unit.</summary>
    /// <param name="lun">The LUN.</param>
    /// <returns>The unit removed; null when there was none.</returns>
    public ScsiDisk? TryRemove(int lun)
    {
        lock (_changes)
        {
            var units = new Dictionary<int, ScsiDisk>(_current.Units);
            if (!units.Remove(lun, out var unit))
            {
                return null;
            }

            _current = new Snapshot(units);
            _version++;
            return unit;
        }
    }

    private static void CheckLun(int lun, string name)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(lun, name);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(lun, MaxLun, name);
    }

    /// <summary>The LUN an 8-byte LUN field names (SAM-5 4.7), as a big-endian number; -1 when no LUN of this map's form.</summary>
    /// <param name="field">The LUN field.</param>
    /// <returns>The LUN, or -1.</returns>
    public static int Decode(ulong field)
    {
        int b0 = (int)(field >> 56);
        int b1 = (int)(field >> 48) & 0xFF;
        return (b0 >> 6) switch
        {
            PeripheralAddressing => b0 == 0 ? b1 : -1,
            FlatSpaceAddressing => ((b0 & 0x3F) << 8) | b1,
            _ => -1,
        };
    }

    /// <summary>The 8-byte LUN field for a LUN: peripheral device addressing up to 255, flat space above.</summary>
    /// <param name="lun">The LUN (0 to <see cref="MaxLun"/>).</param>
    /// <returns>The field, as a big-endian number.</returns>
    public static ulong Encode(int lun) => lun < 256 ? (ulong)lun << 48 : (ulong)(FlatSpaceMarker | lun) << 48;

    /// <summary>
    /// Answers a command that the target answers rather than a unit: REPORT LUNS to any LUN, and every command to an
    /// absent LUN (INQUIRY with peripheral qualifier 011b; anything else CHECK CONDITION, ILLEGAL REQUEST, LOGICAL
    /// UNIT NOT SUPPORTED). The task's status and data length are set when it returns true.
    /// </summary>
    /// <param name="task">The command.</param>
    /// <param name="unit">The unit its LUN names; null when none.</param>
    /// <returns>True when answered here; false when the unit runs it.</returns>
    public bool TryAnswer(ScsiTask task, ScsiDisk? unit)
    {
        ArgumentNullException.ThrowIfNull(task);
        if (task.Cdb[0] == ScsiOpcode.ReportLuns)
        {
            task.Status = ScsiStatus.Good;
            ReportLuns(task);
            return true;
        }

        if (unit != null)
        {
            return false;
        }

        task.Status = ScsiStatus.Good;
        task.DataLength = 0;
        if (task.Cdb[0] == ScsiOpcode.Inquiry && task.Buffer != null)
        {
            // SPC-4 6.6.2: no unit at this LUN, and none can be.
            var data = task.Buffer.Span[..Math.Min(StandardInquiryLength, Math.Min(task.ExpectedLength, task.Buffer.Length))];
            data.Clear();
            if (data.Length > 0)
            {
                data[0] = NoUnitPeripheral;
            }

            task.DataLength = StandardInquiryLength;
        }
        else
        {
            task.Fail(SenseKey.IllegalRequest, Asc.LogicalUnitNotSupported);
        }

        return true;
    }

    /// <summary>REPORT LUNS (SPC-4 6.33): the LUN list, as much of it as the buffer and the initiator take.</summary>
    /// <param name="task">The command.</param>
    public void ReportLuns(ScsiTask task)
    {
        ArgumentNullException.ThrowIfNull(task);
        int[] sorted = _current.Sorted;
        int size = 8 + (8 * sorted.Length);
        task.DataLength = size;
        if (task.Buffer == null)
        {
            return;
        }

        Span<byte> list = task.Buffer.Span[..Math.Min(task.ExpectedLength, task.Buffer.Length)];
        Span<byte> entry = stackalloc byte[8];
        for (int i = 0; i < size && i < list.Length; i += 8)
        {
            entry.Clear();
            if (i == 0)
            {
                BinaryPrimitives.WriteUInt32BigEndian(entry, (uint)(8 * sorted.Length));
            }
            else
            {
                BinaryPrimitives.WriteUInt64BigEndian(entry, Encode(sorted[(i / 8) - 1]));
            }

            entry[..Math.Min(8, list.Length - i)].CopyTo(list[i..]);
        }
    }

    /// <summary>The units at one moment, and their LUNs in order.</summary>
    private sealed class Snapshot(Dictionary<int, ScsiDisk> units)
    {
        public Dictionary<int, ScsiDisk> Units { get; } = units;

        public int[] Sorted { get; } = [.. units.Keys.Order()];
    }
}
