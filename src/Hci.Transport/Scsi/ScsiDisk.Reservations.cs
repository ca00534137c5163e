using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Text;

namespace Hci.Transport.Scsi;

/// <summary>
/// Admission (pending unit attentions, reservation conflicts), SPC-2 reservations (RESERVE and RELEASE) and
/// persistent reservations (SPC-4 5.12, PERSISTENT RESERVE IN and OUT). The state is the unit's, shared by every
/// I_T nexus and guarded by one lock; it is not persisted (APTPL is refused and REPORT CAPABILITIES says so).
/// Persistent reservations survive resets and nexus loss; SPC-2 reservations do not.
/// </summary>
public sealed partial class ScsiDisk
{
    private const int NoNexus = int.MinValue;

    // _gate bits: some nexus has a unit attention pending; some reservation (SPC-2 or persistent) is held.
    private const int GateAttention = 1;
    private const int GateReserved = 2;

    private const ushort UaResetOccurred = 0x2903; // BUS DEVICE RESET FUNCTION OCCURRED (logical unit reset)
    private const ushort UaReservationsPreempted = 0x2A03;
    private const ushort UaReservationsReleased = 0x2A04;
    private const ushort UaRegistrationsPreempted = 0x2A05;

    private readonly object _lock = new();
    private readonly ConcurrentDictionary<int, byte> _known = new();
    private readonly Dictionary<int, List<ushort>> _attention = [];
    private readonly Dictionary<int, Registrant> _registrants = [];
    private int _gate;
    private int _lastNexus = NoNexus;
    private int _spc2Holder = NoNexus;
    private int _prHolder = NoNexus;
    private byte _prType; // 0: no persistent reservation
    private uint _prGeneration;

    /// <summary>
    /// A logical unit reset (LOGICAL UNIT RESET, TARGET WARM RESET): releases SPC-2 reservations and gives every
    /// I_T nexus that has used the unit a unit attention (29h/03h). Persistent reservations stay (SPC-4 5.12.1).
    /// </summary>
    public void Reset()
    {
        lock (_lock)
        {
            _spc2Holder = NoNexus;
            foreach (int nexus in _known.Keys)
            {
                AddAttention(nexus, UaResetOccurred);
            }

            UpdateGate();
        }
    }

    /// <summary>
    /// The I_T nexus is gone (its session closed or failed): its SPC-2 reservation and pending unit attentions are
    /// dropped. Its persistent reservation registrations stay, as SPC-4 requires.
    /// </summary>
    /// <param name="nexus">The nexus (<see cref="ScsiTask.Nexus"/>).</param>
    public void NexusLost(int nexus)
    {
        lock (_lock)
        {
            if (_spc2Holder == nexus)
            {
                _spc2Holder = NoNexus;
            }

            _attention.Remove(nexus);
            _known.TryRemove(nexus, out _);
            Interlocked.CompareExchange(ref _lastNexus, NoNexus, nexus);
            UpdateGate();
        }
    }

    /// <summary>True when the I_T nexus holds a persistent reservation registration on this unit.</summary>
    /// <param name="nexus">The nexus (<see cref="ScsiTask.Nexus"/>).</param>
    /// <returns>Whether it is registered.</returns>
    internal bool IsRegistered(int nexus)
    {
        lock (_lock)
        {
            return _registrants.ContainsKey(nexus) || _spc2Holder == nexus;
        }
    }

    /// <summary>
    /// Checks that any command may run now for its nexus: a pending unit attention (reported once, to every command
    /// but INQUIRY, REPORT LUNS and REQUEST SENSE) and reservation conflicts (SPC-4 table 44, SBC-3 table 13).
    /// </summary>
    /// <param name="task">The command.</param>
    /// <returns>True when it may run; false when the task's status has been set.</returns>
    internal bool Admit(ScsiTask task)
    {
        int nexus = task.Nexus;
        if (nexus != Volatile.Read(ref _lastNexus))
        {
            Track(nexus);
        }

        return Volatile.Read(ref _gate) == 0 || AdmitSlow(task);
    }

    private void Track(int nexus)
    {
        if (!_known.ContainsKey(nexus))
        {
            _known.TryAdd(nexus, 0);
        }

        Volatile.Write(ref _lastNexus, nexus);
    }

    private bool AdmitSlow(ScsiTask task)
    {
        byte op = task.Cdb[0];
        int nexus = task.Nexus;
        lock (_lock)
        {
            if (op is not (0x12 or 0xA0 or 0x03) && TakeAttention(nexus) is ushort ua)
            {
                task.Fail(SenseKey.UnitAttention, (byte)(ua >> 8), (byte)ua);
                return false;
            }

            if (Conflicts(task.Cdb, nexus))
            {
                task.Refuse(ScsiStatus.ReservationConflict);
                return false;
            }
        }

        return true;
    }

    // Under _lock.
    private ushort? TakeAttention(int nexus)
    {
        if (!_attention.TryGetValue(nexus, out var list))
        {
            return null;
        }

        ushort ua = list[0];
        list.RemoveAt(0);
        if (list.Count == 0)
        {
            _attention.Remove(nexus);
            UpdateGate();
        }

        return ua;
    }

    /// <summary>REQUEST SENSE: a pending unit attention for the nexus is reported as its sense data, and cleared.</summary>
    private ushort? TakeAttentionFor(int nexus)
    {
        if ((Volatile.Read(ref _gate) & GateAttention) == 0)
        {
            return null;
        }

        lock (_lock)
        {
            return TakeAttention(nexus);
        }
    }

    // Under _lock.
    private bool Conflicts(byte[] cdb, int nexus)
    {
        byte op = cdb[0];
        if (_spc2Holder != NoNexus && _spc2Holder != nexus)
        {
            // SPC-2 reservations: only what cannot disturb the holder passes; RELEASE is a no-op (SPC-2 7.21).
            return op is not (0x12 or 0x03 or 0xA0 or 0x17 or 0x57 or 0xA3 or 0x25) && !(op == 0x9E && (cdb[1] & 0x1F) == 0x10);
        }

        if (_prType == 0)
        {
            return false;
        }

        bool registered = _registrants.ContainsKey(nexus);
        bool holder = IsAllRegistrants(_prType) ? registered : nexus == _prHolder;
        if (holder || (registered && _prType is 5 or 6))
        {
            return false; // the holder, or a registrant under a registrants-only type: full access
        }

        switch (op)
        {
            // Allowed whatever the type: they neither read nor change the medium.
            case 0x00 or 0x03 or 0x12 or 0x25 or 0x4D or 0x5E or 0x5F or 0xA0 or 0xA3:
                return false;
            case 0x9E when (cdb[1] & 0x1F) == 0x10:
                return false;

            // Reads: allowed under the write exclusive types only.
            case 0x08 or 0x28 or 0xA8 or 0x88 or 0x2F or 0xAF or 0x8F or 0x34 or 0x90 or 0x1A or 0x5A or 0x37 or 0xB7 or 0x9E:
                return _prType is 3 or 6 or 8;
            default:
                return true;
        }
    }

    private static bool IsAllRegistrants(byte type) => type is 7 or 8;

    // Under _lock.
    private void AddAttention(int nexus, ushort ua)
    {
        if (!_attention.TryGetValue(nexus, out var list))
        {
            list = new List<ushort>(2);
            _attention[nexus] = list;
        }

        if (!list.Contains(ua))
        {
            list.Add(ua);
        }
    }

    // Under _lock.
    private void UpdateGate()
    {
        int gate = (_attention.Count > 0 ? GateAttention : 0) | (_spc2Holder != NoNexus || _prType != 0 ? GateReserved : 0);
        Volatile.Write(ref _gate, gate);
    }

    private void Reserve6(ScsiTask task)
    {
        // RESERVE(10): third-party and long identifier reservations are not supported.
        if (task.Cdb[0] == 0x56 && (task.Cdb[1] & 0x12) != 0)
        {
            task.Fail(SenseKey.IllegalRequest, AscInvalidFieldInCdb, 0);
            return;
        }

        lock (_lock)
        {
            if (_registrants.Count > 0 || _prType != 0 || (_spc2Holder != NoNexus && _spc2Holder != task.Nexus))
            {
                task.Refuse(ScsiStatus.ReservationConflict);
                return;
            }

            _spc2Holder = task.Nexus;
            UpdateGate();
        }
    }

    private void Release6(ScsiTask task)
    {
        lock (_lock)
        {
            if (_registrants.Count > 0 || _prType != 0)
            {
                task.Refuse(ScsiStatus.ReservationConflict);
                return;
            }

            if (_spc2Holder == task.Nexus)
            {
                _spc2Holder = NoNexus;
                UpdateGate();
            }
        }
    }

    private void PersistentReserveIn(ScsiTask task)
    {
        int action = task.Cdb[1] & 0x1F;
        if (action > 3)
        {
            task.Fail(SenseKey.IllegalRequest, AscInvalidFieldInCdb, 0);
            return;
        }

        byte[] d;
        lock (_lock)
        {
            switch (action)
            {
                case 0: // READ KEYS
                    d = new byte[8 + (8 * _registrants.Count)];
                    BinaryPrimitives.WriteUInt32BigEndian(d, _prGeneration);
                    BinaryPrimitives.WriteUInt32BigEndian(d.AsSpan(4), (uint)(8 * _registrants.Count));
                    int i = 0;
                    foreach (var r in _registrants.Values)
                    {
                        BinaryPrimitives.WriteUInt64BigEndian(d.AsSpan(8 + (8 * i++)), r.Key);
                    }

                    break;
                case 1: // READ RESERVATION
                    d = new byte[_prType == 0 ? 8 : 24];
                    BinaryPrimitives.WriteUInt32BigEndian(d, _prGeneration);
                    if (_prType != 0)
                    {
                        BinaryPrimitives.WriteUInt32BigEndian(d.AsSpan(4), 16);
                        ulong key = IsAllRegistrants(_prType) ? 0 : _registrants.TryGetValue(_prHolder, out var h) ? h.Key : 0;
                        BinaryPrimitives.WriteUInt64BigEndian(d.AsSpan(8), key);
                        d[21] = _prType; // scope LU (0), type
                    }

                    break;
                case 2: // REPORT CAPABILITIES
                    d = new byte[8];
                    d[1] = 8;
                    d[2] = 0x00; // CRH, SIP_C, ATP_C, PTPL_C all 0: no persist through power loss
                    d[3] = 0x80; // TMV: the type mask is valid; ALLOW COMMANDS 0; PTPL_A 0
                    d[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02; // WR_EX_AR, EX_AC_RO, WR_EX_RO, EX_AC, WR_EX
                    d[5] = 0x01; // EX_AC_AR
                    break;
                default: // READ FULL STATUS
                {
                    var descriptors = new List<byte[]>(_registrants.Count);
                    foreach (var (nexus, r) in _registrants)
                    {
                        byte[] id = TransportId(r.Port);
                        var e = new byte[24 + id.Length];
                        BinaryPrimitives.WriteUInt64BigEndian(e, r.Key);
                        bool holds = _prType != 0 && (IsAllRegistrants(_prType) || nexus == _prHolder);
                        if (holds)
                        {
                            e[12] = 0x01; // R_HOLDER
                            e[13] = _prType;
                        }

                        BinaryPrimitives.WriteUInt16BigEndian(e.AsSpan(18), 1); // relative target port identifier
                        BinaryPrimitives.WriteUInt32BigEndian(e.AsSpan(20), (uint)id.Length);
                        id.CopyTo(e, 24);
                        descriptors.Add(e);
                    }

                    int length = descriptors.Sum(x => x.Length);
                    d = new byte[8 + length];
                    BinaryPrimitives.WriteUInt32BigEndian(d, _prGeneration);
                    BinaryPrimitives.WriteUInt32BigEndian(d.AsSpan(4), (uint)length);
                    int at = 8;
                    foreach (var e in descriptors)
                    {
                        e.CopyTo(d, at);
                        at += e.Length;
                    }

                    break;
                }
            }
        }

        Reply(task, d);
    }

    // iSCSI TransportID (SPC-4 7.6.4.6): format 01b (name, ",i,0x", ISID) when the port name has that form, else 00b.
    private static byte[] TransportId(string port)
    {
        int n = Encoding.UTF8.GetByteCount(port) + 1; // NUL terminated
        int padded = Math.Max(20, (n + 3) & ~3);
        var id = new byte[4 + padded];
        id[0] = (byte)((port.Contains(",i,0x", StringComparison.OrdinalIgnoreCase) ? 0x40 : 0x00) | 0x05);
        BinaryPrimitives.WriteUInt16BigEndian(id.AsSpan(2), (ushort)padded);
        Encoding.UTF8.GetBytes(port, id.AsSpan(4));
        return id;
    }

    /// <summary>
    /// True when the task's nexus may still run it (checked again after waiting for the atomic lock: a PREEMPT AND
    /// ABORT may have fenced the nexus off meanwhile); else the task is refused with RESERVATION CONFLICT.
    /// </summary>
    private bool StillAdmitted(ScsiTask task)
    {
        if ((Volatile.Read(ref _gate) & GateReserved) == 0)
        {
            return true;
        }

        lock (_lock)
        {
            if (Conflicts(task.Cdb, task.Nexus))
            {
                task.Refuse(ScsiStatus.ReservationConflict);
                return false;
            }
        }

        return true;
    }

    private async ValueTask PersistentReserveOut(ScsiTask task)
    {
        if (PersistentReserveOutLocked(task) && (task.Cdb[1] & 0x1F) == 5)
        {
            // PREEMPT AND ABORT (SPC-4 5.12.11.2.6): the preempted nexuses' tasks are aborted. Those not yet at the
            // device now meet a reservation conflict; those at the device (or waiting in a scheduler under it)
            // finish before GOOD, so that none of their writes lands after it.
            await _compareAndWrite.WaitAsync();
            try
            {
                await ExcludeWritesAsync(0, 0);
            }
            finally
            {
                EndExclusion();
                _compareAndWrite.Release();
            }
        }
    }

    // Returns true when the service action succeeded.
    private bool PersistentReserveOutLocked(ScsiTask task)
    {
        byte[] cdb = task.Cdb;
        int action = cdb[1] & 0x1F;
        int scope = cdb[2] >> 4;
        byte type = (byte)(cdb[2] & 0x0F);
        uint listLength = BinaryPrimitives.ReadUInt32BigEndian(cdb.AsSpan(5));
        if (action > 6)
        {
            task.Fail(SenseKey.IllegalRequest, AscInvalidFieldInCdb, 0); // REGISTER AND MOVE and beyond: not supported
            return false;
        }

        if (listLength != 24 || task.Buffer == null || task.ExpectedLength < 24)
        {
            task.Fail(SenseKey.IllegalRequest, AscParameterListLength, 0);
            return false;
        }

        var p = task.Buffer.Span[..24];
        ulong key = BinaryPrimitives.ReadUInt64BigEndian(p);
        ulong serviceKey = BinaryPrimitives.ReadUInt64BigEndian(p[8..]);
        byte flags = p[20];
        bool registering = action is 0 or 6;

        // SPEC_I_PT, ALL_TG_PT and APTPL are refused: REPORT CAPABILITIES says none is supported.
        if ((flags & (0x08 | 0x04 | 0x01)) != 0 && (registering || (flags & 0x01) != 0))
        {
            task.Fail(SenseKey.IllegalRequest, AscInvalidFieldInParameterList, 0);
            return false;
        }

        bool typed = action is 1 or 2 or 4 or 5;
        if (typed && (scope != 0 || type is not (1 or 3 or 5 or 6 or 7 or 8)))
        {
            task.Fail(SenseKey.IllegalRequest, AscInvalidFieldInCdb, 0);
            return false;
        }

        int nexus = task.Nexus;
        lock (_lock)
        {
            if (_spc2Holder != NoNexus && _spc2Holder != nexus)
            {
                task.Refuse(ScsiStatus.ReservationConflict);
                return false;
            }

            _registrants.TryGetValue(nexus, out var me);
            if (registering)
            {
                Register(task, me, key, serviceKey, ignoreExisting: action == 6);
                UpdateGate();
                return false;
            }

            if (me == null || me.Key != key)
            {
                task.Refuse(ScsiStatus.ReservationConflict);
                return false;
            }

            switch (action)
            {
                case 1: // RESERVE
                    if (_prType == 0)
                    {
                        _prType = type;
                        _prHolder = nexus;
                    }
                    else if (_prType != type || !(IsAllRegistrants(_prType) || _prHolder == nexus))
                    {
                        task.Refuse(ScsiStatus.ReservationConflict);
                        return false;
                    }

                    break;
                case 2: // RELEASE
                    if (_prType == 0 || !(IsAllRegistrants(_prType) || _prHolder == nexus))
                    {
                        return false; // nothing held by this nexus: GOOD, no change
                    }

                    if (_prType != type)
                    {
                        task.Fail(SenseKey.IllegalRequest, AscInvalidFieldInParameterList, 0x04); // INVALID RELEASE OF PERSISTENT RESERVATION
                        return false;
                    }

                    ReleaseReservation(nexus);
                    break;
                case 3: // CLEAR
                    foreach (int other in _registrants.Keys)
                    {
                        if (other != nexus)
                        {
                            AddAttention(other, UaReservationsPreempted);
                        }
                    }

                    _registrants.Clear();
                    _prType = 0;
                    _prHolder = NoNexus;
                    _prGeneration++;
                    break;
                default: // PREEMPT, PREEMPT AND ABORT (the abort: see PersistentReserveOut)
                    Preempt(task, nexus, serviceKey, type);
                    break;
            }

            UpdateGate();
        }

        return task.Status == ScsiStatus.Good;
    }

    // Under _lock.
    private void Register(ScsiTask task, Registrant? me, ulong key, ulong serviceKey, bool ignoreExisting)
    {
        int nexus = task.Nexus;
        if (!ignoreExisting && (me == null ? key != 0 : me.Key != key))
        {
            task.Refuse(ScsiStatus.ReservationConflict);
            return;
        }

        if (serviceKey == 0)
        {
            if (me != null)
            {
                Unregister(nexus);
                _prGeneration++;
            }

            return;
        }

        if (me == null)
        {
            _registrants[nexus] = new Registrant(serviceKey, task.InitiatorPort ?? $"nexus-{nexus}");
        }
        else
        {
            me.Key = serviceKey;
        }

        _prGeneration++;
    }

    // Under _lock. A removed registration takes the reservation with it when it held it (SPC-4 5.12.11.2.3).
    private void Unregister(int nexus)
    {
        _registrants.Remove(nexus);
        if (_prType == 0)
        {
            return;
        }

        if (IsAllRegistrants(_prType))
        {
            if (_registrants.Count == 0)
            {
                _prType = 0;
                _prHolder = NoNexus;
            }
        }
        else if (_prHolder == nexus)
        {
            ReleaseReservation(nexus);
        }
    }

    // Under _lock. Registrants-only and all-registrants reservations tell the other registrants (SPC-4 5.12.11.2.2).
    private void ReleaseReservation(int nexus)
    {
        if (_prType is 5 or 6 or 7 or 8)
        {
            foreach (int other in _registrants.Keys)
            {
                if (other != nexus)
                {
                    AddAttention(other, UaReservationsReleased);
                }
            }
        }

        _prType = 0;
        _prHolder = NoNexus;
    }

    // Under _lock (SPC-4 5.12.11.4).
    private void Preempt(ScsiTask task, int nexus, ulong serviceKey, byte type)
    {
        bool allRegistrants = _prType != 0 && IsAllRegistrants(_prType);
        bool takesReservation = _prType != 0 && (allRegistrants ? serviceKey == 0 : _registrants.TryGetValue(_prHolder, out var h) && h.Key == serviceKey);
        if (!takesReservation && serviceKey == 0)
        {
            task.Fail(SenseKey.IllegalRequest, AscInvalidFieldInParameterList, 0);
            return;
        }

        var removed = new List<int>();
        foreach (var (other, r) in _registrants)
        {
            if (other != nexus && (r.Key == serviceKey || (allRegistrants && serviceKey == 0)))
            {
                removed.Add(other);
            }
        }

        if (removed.Count == 0 && !takesReservation)
        {
            task.Refuse(ScsiStatus.ReservationConflict);
            return;
        }

        foreach (int other in removed)
        {
            _registrants.Remove(other);
            AddAttention(other, UaRegistrationsPreempted);
        }

        if (takesReservation)
        {
            bool changed = _prType != type;
            _prType = type;
            _prHolder = nexus;
            if (changed)
            {
                foreach (int other in _registrants.Keys)
                {
                    if (other != nexus)
                    {
                        AddAttention(other, UaReservationsReleased);
                    }
                }
            }
        }

        _prGeneration++;
    }

    private sealed class Registrant(ulong key, string port)
    {
        public ulong Key { get; set; } = key;

        public string Port { get; } = port;
    }
}
