using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Text;

namespace Hci.Transport.Scsi;

/// <summary>What a reservation service action did (the unit maps it to a status and sense).</summary>
internal enum ReservationResult
{
    /// <summary>Done (or nothing to do): GOOD.</summary>
    Good,

    /// <summary>RESERVATION CONFLICT.</summary>
    Conflict,

    /// <summary>ILLEGAL REQUEST, INVALID FIELD IN PARAMETER LIST.</summary>
    InvalidParameter,

    /// <summary>ILLEGAL REQUEST, INVALID RELEASE OF PERSISTENT RESERVATION.</summary>
    InvalidRelease,
}

/// <summary>Persistent reservation types (SPC-4 table 197), and none.</summary>
internal static class ReservationType
{
    public const byte None = 0;
    public const byte WriteExclusive = 1;
    public const byte ExclusiveAccess = 3;
    public const byte WriteExclusiveRegistrantsOnly = 5;
    public const byte ExclusiveAccessRegistrantsOnly = 6;
    public const byte WriteExclusiveAllRegistrants = 7;
    public const byte ExclusiveAccessAllRegistrants = 8;

    /// <summary>True for a type this unit takes.</summary>
    public static bool IsValid(byte type) => type is WriteExclusive or ExclusiveAccess or WriteExclusiveRegistrantsOnly or ExclusiveAccessRegistrantsOnly or WriteExclusiveAllRegistrants or ExclusiveAccessAllRegistrants;

    /// <summary>All-registrants types: every registrant holds the reservation.</summary>
    public static bool IsAllRegistrants(byte type) => type is WriteExclusiveAllRegistrants or ExclusiveAccessAllRegistrants;

    /// <summary>Registrants-only and all-registrants types: every registrant has full access.</summary>
    public static bool LetsRegistrantsIn(byte type) => type is WriteExclusiveRegistrantsOnly or ExclusiveAccessRegistrantsOnly or WriteExclusiveAllRegistrants or ExclusiveAccessAllRegistrants;

    /// <summary>Write exclusive types: others may still read.</summary>
    public static bool LetsOthersRead(byte type) => type is WriteExclusive or WriteExclusiveRegistrantsOnly or WriteExclusiveAllRegistrants;
}

/// <summary>
/// One logical unit's reservations, as SPDK's <c>lib/scsi/scsi_pr.c</c> keeps them apart from the block commands:
/// SPC-2 reservations (RESERVE and RELEASE), persistent reservations (SPC-4 5.12: registrations, the reservation
/// and its type, the generation), which commands conflict with them (SPC-4 table 44, SBC-3 table 13), and the unit
/// attentions they and logical unit resets raise, pending per I_T nexus. Knows nothing of sockets or transports:
/// nexuses are numbers.
/// </summary>
/// <remarks>
/// All state sits under one lock, shared by every nexus; a volatile gate lets the data path pass with one read
/// while nothing is reserved and no attention is pending. Not persisted (APTPL is refused and REPORT CAPABILITIES
/// says so). Persistent reservations survive resets and nexus loss; SPC-2 reservations do not.
/// </remarks>
internal sealed class PersistentReservations
{
    /// <summary>No nexus (no holder).</summary>
    public const int NoNexus = int.MinValue;

    // _gate bits: some nexus has a unit attention pending; some reservation (SPC-2 or persistent) is held.
    private const int GateAttention = 1;
    private const int GateReserved = 2;

    private readonly object _lock = new();
    private readonly ConcurrentDictionary<int, byte> _known = new();
    private readonly Dictionary<int, List<Asc>> _attention = [];
    private readonly Dictionary<int, Registrant> _registrants = [];
    private int _gate;
    private int _lastNexus = NoNexus;
    private int _spc2Holder = NoNexus;
    private int _holder = NoNexus;
    private byte _type;
    private uint _generation;

    /// <summary>The persistent reservation's type; <see cref="ReservationType.None"/> when none is held.</summary>
    public byte Type
    {
        get
        {
            lock (_lock)
            {
                return _type;
            }
        }
    }

    /// <summary>The PRgeneration (SPC-4 6.16.2): counts registrations and their changes.</summary>
    public uint Generation
    {
        get
        {
            lock (_lock)
            {
                return _generation;
            }
        }
    }

    /// <summary>True while any reservation is held or any unit attention is pending (the data path looks here first).</summary>
    public bool Gated => Volatile.Read(ref _gate) != 0;

    /// <summary>True while any reservation (SPC-2 or persistent) is held.</summary>
    public bool Reserved => (Volatile.Read(ref _gate) & GateReserved) != 0;

    /// <summary>The key a nexus registered; null when it has none.</summary>
    /// <param name="nexus">The nexus.</param>
    /// <returns>Its key.</returns>
    public ulong? KeyOf(int nexus)
    {
        lock (_lock)
        {
            return _registrants.TryGetValue(nexus, out var r) ? r.Key : null;
        }
    }

    /// <summary>True when the nexus holds the persistent reservation (for all-registrants types: is registered).</summary>
    /// <param name="nexus">The nexus.</param>
    /// <returns>Whether it holds it.</returns>
    public bool Holds(int nexus)
    {
        lock (_lock)
        {
            return _type != ReservationType.None && (ReservationType.IsAllRegistrants(_type) ? _registrants.ContainsKey(nexus) : _holder == nexus);
        }
    }

    /// <summary>True when the nexus holds a registration, or an SPC-2 reservation.</summary>
    /// <param name="nexus">The nexus.</param>
    /// <returns>Whether it is registered.</returns>
    public bool IsRegistered(int nexus)
    {
        lock (_lock)
        {
            return _registrants.ContainsKey(nexus) || _spc2Holder == nexus;
        }
    }

    /// <summary>Notes that a nexus uses the unit (it gets a unit attention on the next reset).</summary>
    /// <param name="nexus">The nexus.</param>
    public void Track(int nexus)
    {
        if (nexus == Volatile.Read(ref _lastNexus))
        {
            return;
        }

        if (!_known.ContainsKey(nexus))
        {
            _known.TryAdd(nexus, 0);
        }

        Volatile.Write(ref _lastNexus, nexus);
    }

    /// <summary>
    /// A logical unit reset: releases the SPC-2 reservation and gives every nexus that has used the unit a unit
    /// attention (BUS DEVICE RESET FUNCTION OCCURRED). Persistent reservations stay (SPC-4 5.12.1).
    /// </summary>
    public void Reset()
    {
        lock (_lock)
        {
            _spc2Holder = NoNexus;
            foreach (int nexus in _known.Keys)
            {
                AddAttention(nexus, Asc.BusDeviceResetOccurred);
            }

            UpdateGate();
        }
    }

    /// <summary>The nexus is gone: its SPC-2 reservation and pending unit attentions go; its registration stays.</summary>
    /// <param name="nexus">The nexus.</param>
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

    /// <summary>
    /// Admission of a command (once <see cref="Gated"/> said to look): a pending unit attention is reported once, to
    /// every command but INQUIRY, REPORT LUNS and REQUEST SENSE; then reservation conflicts.
    /// </summary>
    /// <param name="task">The command.</param>
    /// <returns>True when it may run; false when the task's status has been set.</returns>
    public bool Admit(ScsiTask task)
    {
        byte op = task.Cdb[0];
        lock (_lock)
        {
            if (op is not (ScsiOpcode.Inquiry or ScsiOpcode.ReportLuns or ScsiOpcode.RequestSense) && TakeAttentionLocked(task.Nexus) is Asc ua)
            {
                task.Fail(SenseKey.UnitAttention, ua);
                return false;
            }

            if (ConflictsLocked(task.Cdb, task.Nexus))
            {
                task.Refuse(ScsiStatus.ReservationConflict);
                return false;
            }
        }

        return true;
    }

    /// <summary>Takes the nexus's oldest pending unit attention (REQUEST SENSE reports it as its sense data).</summary>
    /// <param name="nexus">The nexus.</param>
    /// <returns>The attention, or null when none is pending.</returns>
    public Asc? TakeAttention(int nexus)
    {
        if ((Volatile.Read(ref _gate) & GateAttention) == 0)
        {
            return null;
        }

        lock (_lock)
        {
            return TakeAttentionLocked(nexus);
        }
    }

    /// <summary>True when the command from the nexus conflicts with a reservation now.</summary>
    /// <param name="cdb">The command.</param>
    /// <param name="nexus">Its nexus.</param>
    /// <returns>Whether it conflicts.</returns>
    public bool Conflicts(ReadOnlySpan<byte> cdb, int nexus)
    {
        if (!Reserved)
        {
            return false;
        }

        lock (_lock)
        {
            return ConflictsLocked(cdb, nexus);
        }
    }

    /// <summary>RESERVE (6, 10): the SPC-2 reservation, refused while any registration or other holder exists.</summary>
    /// <param name="nexus">The nexus.</param>
    /// <returns>Good or Conflict.</returns>
    public ReservationResult ReserveSpc2(int nexus)
    {
        lock (_lock)
        {
            if (_registrants.Count > 0 || _type != ReservationType.None || (_spc2Holder != NoNexus && _spc2Holder != nexus))
            {
                return ReservationResult.Conflict;
            }

            _spc2Holder = nexus;
            UpdateGate();
            return ReservationResult.Good;
        }
    }

    /// <summary>RELEASE (6, 10): a no-op unless the nexus holds the SPC-2 reservation (SPC-2 7.21).</summary>
    /// <param name="nexus">The nexus.</param>
    /// <returns>Good, or Conflict while persistent reservations are in use.</returns>
    public ReservationResult ReleaseSpc2(int nexus)
    {
        lock (_lock)
        {
            if (_registrants.Count > 0 || _type != ReservationType.None)
            {
                return ReservationResult.Conflict;
            }

            if (_spc2Holder == nexus)
            {
                _spc2Holder = NoNexus;
                UpdateGate();
            }

            return ReservationResult.Good;
        }
    }

    /// <summary>REGISTER and REGISTER AND IGNORE EXISTING KEY: a service key of 0 unregisters.</summary>
    /// <param name="nexus">The nexus.</param>
    /// <param name="port">The initiator port's name (READ FULL STATUS); null: named after the nexus.</param>
    /// <param name="key">The reservation key (the nexus's current one, or 0 when it has none).</param>
    /// <param name="serviceKey">The new key.</param>
    /// <param name="ignoreExisting">REGISTER AND IGNORE EXISTING KEY: <paramref name="key"/> is not checked.</param>
    /// <returns>What happened.</returns>
    public ReservationResult Register(int nexus, string? port, ulong key, ulong serviceKey, bool ignoreExisting)
    {
        lock (_lock)
        {
            if (Spc2HeldByOther(nexus))
            {
                return ReservationResult.Conflict;
            }

            _registrants.TryGetValue(nexus, out var me);
            if (!ignoreExisting && (me == null ? key != 0 : me.Key != key))
            {
                return ReservationResult.Conflict;
            }

            if (serviceKey == 0)
            {
                if (me != null)
                {
                    Unregister(nexus);
                    _generation++;
                }
            }
            else
            {
                if (me == null)
                {
                    _registrants[nexus] = new Registrant(serviceKey, port ?? $"nexus-{nexus}");
                }
                else
                {
                    me.Key = serviceKey;
                }

                _generation++;
            }

            UpdateGate();
            return ReservationResult.Good;
        }
    }

    /// <summary>RESERVE: takes the reservation, or confirms the one the nexus holds with that type.</summary>
    /// <param name="nexus">The nexus.</param>
    /// <param name="key">Its reservation key.</param>
    /// <param name="type">The type.</param>
    /// <returns>What happened.</returns>
    public ReservationResult Reserve(int nexus, ulong key, byte type)
    {
        lock (_lock)
        {
            if (!IsRegisteredWith(nexus, key))
            {
                return ReservationResult.Conflict;
            }

            if (_type == ReservationType.None)
            {
                _type = type;
                _holder = nexus;
                UpdateGate();
                return ReservationResult.Good;
            }

            return _type == type && HoldsLocked(nexus) ? ReservationResult.Good : ReservationResult.Conflict;
        }
    }

    /// <summary>RELEASE: gives up the reservation the nexus holds (GOOD with no change when it holds none).</summary>
    /// <param name="nexus">The nexus.</param>
    /// <param name="key">Its reservation key.</param>
    /// <param name="type">The type it holds.</param>
    /// <returns>What happened.</returns>
    public ReservationResult Release(int nexus, ulong key, byte type)
    {
        lock (_lock)
        {
            if (!IsRegisteredWith(nexus, key))
            {
                return ReservationResult.Conflict;
            }

            if (_type == ReservationType.None || !HoldsLocked(nexus))
            {
                return ReservationResult.Good;
            }

            if (_type != type)
            {
                return ReservationResult.InvalidRelease;
            }

            ReleaseReservation(nexus);
            UpdateGate();
            return ReservationResult.Good;
        }
    }

    /// <summary>CLEAR: every registration and the reservation go; the other registrants are told.</summary>
    /// <param name="nexus">The nexus.</param>
    /// <param name="key">Its reservation key.</param>
    /// <returns>What happened.</returns>
    public ReservationResult Clear(int nexus, ulong key)
    {
        lock (_lock)
        {
            if (!IsRegisteredWith(nexus, key))
            {
                return ReservationResult.Conflict;
            }

            foreach (int other in _registrants.Keys)
            {
                if (other != nexus)
                {
                    AddAttention(other, Asc.ReservationsPreempted);
                }
            }

            _registrants.Clear();
            _type = ReservationType.None;
            _holder = NoNexus;
            _generation++;
            UpdateGate();
            return ReservationResult.Good;
        }
    }

    /// <summary>
    /// PREEMPT (and PREEMPT AND ABORT, whose aborting is the unit's): the registrations with the service key go, and
    /// the reservation when its holder's key is the service key (SPC-4 5.12.11.4).
    /// </summary>
    /// <param name="nexus">The nexus.</param>
    /// <param name="key">Its reservation key.</param>
    /// <param name="serviceKey">The key preempted.</param>
    /// <param name="type">The type of the reservation taken.</param>
    /// <returns>What happened.</returns>
    public ReservationResult Preempt(int nexus, ulong key, ulong serviceKey, byte type)
    {
        lock (_lock)
        {
            if (!IsRegisteredWith(nexus, key))
            {
                return ReservationResult.Conflict;
            }

            bool allRegistrants = _type != ReservationType.None && ReservationType.IsAllRegistrants(_type);
            bool takesReservation = _type != ReservationType.None && (allRegistrants ? serviceKey == 0 : _registrants.TryGetValue(_holder, out var h) && h.Key == serviceKey);
            if (!takesReservation && serviceKey == 0)
            {
                return ReservationResult.InvalidParameter;
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
                return ReservationResult.Conflict;
            }

            foreach (int other in removed)
            {
                _registrants.Remove(other);
                AddAttention(other, Asc.RegistrationsPreempted);
            }

            if (takesReservation)
            {
                bool changed = _type != type;
                _type = type;
                _holder = nexus;
                if (changed)
                {
                    foreach (int other in _registrants.Keys)
                    {
                        if (other != nexus)
                        {
                            AddAttention(other, Asc.ReservationsReleased);
                        }
                    }
                }
            }

            _generation++;
            UpdateGate();
            return ReservationResult.Good;
        }
    }

    /// <summary>PERSISTENT RESERVE IN parameter data (SPC-4 6.16) for one service action (0 to 3).</summary>
    /// <param name="action">READ KEYS, READ RESERVATION, REPORT CAPABILITIES or READ FULL STATUS.</param>
    /// <returns>The parameter data.</returns>
    public byte[] ReadIn(int action)
    {
        lock (_lock)
        {
            switch (action)
            {
                case ScsiServiceAction.ReadKeys:
                {
                    var d = new byte[8 + (8 * _registrants.Count)];
                    BinaryPrimitives.WriteUInt32BigEndian(d, _generation);
                    BinaryPrimitives.WriteUInt32BigEndian(d.AsSpan(4), (uint)(8 * _registrants.Count));
                    int i = 0;
                    foreach (var r in _registrants.Values)
                    {
                        BinaryPrimitives.WriteUInt64BigEndian(d.AsSpan(8 + (8 * i++)), r.Key);
                    }

                    return d;
                }

                case ScsiServiceAction.ReadReservation:
                {
                    var d = new byte[_type == ReservationType.None ? 8 : 24];
                    BinaryPrimitives.WriteUInt32BigEndian(d, _generation);
                    if (_type != ReservationType.None)
                    {
                        BinaryPrimitives.WriteUInt32BigEndian(d.AsSpan(4), 16);
                        ulong key = ReservationType.IsAllRegistrants(_type) ? 0 : _registrants.TryGetValue(_holder, out var h) ? h.Key : 0;
                        BinaryPrimitives.WriteUInt64BigEndian(d.AsSpan(8), key);
                        d[21] = _type; // scope LU (0), type
                    }

                    return d;
                }

                case ScsiServiceAction.ReportCapabilities:
                {
                    var d = new byte[8];
                    d[1] = 8;
                    d[2] = 0; // CRH, SIP_C, ATP_C, PTPL_C all 0: no persist through power loss
                    d[3] = 0x80; // TMV: the type mask is valid; ALLOW COMMANDS 0; PTPL_A 0
                    d[4] = TypeMaskByte4; // WR_EX_AR, EX_AC_RO, WR_EX_RO, EX_AC, WR_EX
                    d[5] = TypeMaskByte5; // EX_AC_AR
                    return d;
                }

                default:
                    return ReadFullStatus();
            }
        }
    }

    // The persistent reservation type mask (SPC-4 table 205): each bit a type this unit takes.
    private const byte TypeMaskByte4 = (1 << 7) | (1 << 6) | (1 << 5) | (1 << 3) | (1 << 1);
    private const byte TypeMaskByte5 = 1 << 0;

    // Under _lock.
    private byte[] ReadFullStatus()
    {
        var descriptors = new List<byte[]>(_registrants.Count);
        foreach (var (nexus, r) in _registrants)
        {
            byte[] id = TransportId(r.Port);
            var e = new byte[24 + id.Length];
            BinaryPrimitives.WriteUInt64BigEndian(e, r.Key);
            if (HoldsLocked(nexus))
            {
                e[12] = 1; // R_HOLDER
                e[13] = _type;
            }

            BinaryPrimitives.WriteUInt16BigEndian(e.AsSpan(18), 1); // relative target port identifier
            BinaryPrimitives.WriteUInt32BigEndian(e.AsSpan(20), (uint)id.Length);
            id.CopyTo(e, 24);
            descriptors.Add(e);
        }

        int length = descriptors.Sum(x => x.Length);
        var d = new byte[8 + length];
        BinaryPrimitives.WriteUInt32BigEndian(d, _generation);
        BinaryPrimitives.WriteUInt32BigEndian(d.AsSpan(4), (uint)length);
        int at = 8;
        foreach (var e in descriptors)
        {
            e.CopyTo(d, at);
            at += e.Length;
        }

        return d;
    }

    // iSCSI TransportID (SPC-4 7.6.4.6): format 01b (name, ",i,0x", ISID) when the port name has that form, else 00b.
    private const byte ProtocolIscsi = 5;
    private const byte FormatNameAndIsid = 1 << 6;

    private static byte[] TransportId(string port)
    {
        int n = Encoding.UTF8.GetByteCount(port) + 1; // NUL terminated
        int padded = Math.Max(20, (n + 3) & ~3);
        var id = new byte[4 + padded];
        id[0] = (byte)((port.Contains(",i,0x", StringComparison.OrdinalIgnoreCase) ? FormatNameAndIsid : 0) | ProtocolIscsi);
        BinaryPrimitives.WriteUInt16BigEndian(id.AsSpan(2), (ushort)padded);
        Encoding.UTF8.GetBytes(port, id.AsSpan(4));
        return id;
    }

    // Under _lock.
    private bool Spc2HeldByOther(int nexus) => _spc2Holder != NoNexus && _spc2Holder != nexus;

    // Under _lock. Every service action but the registering ones: no other SPC-2 holder, and this nexus's key.
    private bool IsRegisteredWith(int nexus, ulong key) => !Spc2HeldByOther(nexus) && _registrants.TryGetValue(nexus, out var me) && me.Key == key;

    // Under _lock.
    private bool HoldsLocked(int nexus) => _type != ReservationType.None && (ReservationType.IsAllRegistrants(_type) ? _registrants.ContainsKey(nexus) : _holder == nexus);

    // Under _lock.
    private Asc? TakeAttentionLocked(int nexus)
    {
        if (!_attention.TryGetValue(nexus, out var list))
        {
            return null;
        }

        var ua = list[0];
        list.RemoveAt(0);
        if (list.Count == 0)
        {
            _attention.Remove(nexus);
            UpdateGate();
        }

        return ua;
    }

    // Under _lock.
    private bool ConflictsLocked(ReadOnlySpan<byte> cdb, int nexus)
    {
        byte op = cdb[0];
        bool readCapacity16 = op == ScsiOpcode.ServiceActionIn16 && (cdb[1] & ScsiServiceAction.Mask) == ScsiServiceAction.ReadCapacity16;
        if (Spc2HeldByOther(nexus))
        {
            // SPC-2 reservations: only what cannot disturb the holder passes; RELEASE is a no-op (SPC-2 7.21).
            return op is not (ScsiOpcode.Inquiry or ScsiOpcode.RequestSense or ScsiOpcode.ReportLuns or ScsiOpcode.Release6 or ScsiOpcode.Release10
                or ScsiOpcode.MaintenanceIn or ScsiOpcode.ReadCapacity10) && !readCapacity16;
        }

        if (_type == ReservationType.None)
        {
            return false;
        }

        bool registered = _registrants.ContainsKey(nexus);
        if (HoldsLocked(nexus) || (registered && ReservationType.LetsRegistrantsIn(_type)))
        {
            return false; // the holder, or a registrant under a registrants-only type: full access
        }

        switch (op)
        {
            // Allowed whatever the type: they neither read nor change the medium.
            case ScsiOpcode.TestUnitReady or ScsiOpcode.RequestSense or ScsiOpcode.Inquiry or ScsiOpcode.ReadCapacity10 or ScsiOpcode.LogSense
                or ScsiOpcode.PersistentReserveIn or ScsiOpcode.PersistentReserveOut or ScsiOpcode.ReportLuns or ScsiOpcode.MaintenanceIn:
                return false;
            case ScsiOpcode.ServiceActionIn16 when readCapacity16:
                return false;

            // Reads: allowed under the write exclusive types only.
            case ScsiOpcode.Read6 or ScsiOpcode.Read10 or ScsiOpcode.Read12 or ScsiOpcode.Read16 or ScsiOpcode.Verify10 or ScsiOpcode.Verify12
                or ScsiOpcode.Verify16 or ScsiOpcode.PreFetch10 or ScsiOpcode.PreFetch16 or ScsiOpcode.ModeSense6 or ScsiOpcode.ModeSense10
                or ScsiOpcode.ReadDefectData10 or ScsiOpcode.ReadDefectData12 or ScsiOpcode.ServiceActionIn16:
                return !ReservationType.LetsOthersRead(_type);
            default:
                return true;
        }
    }

    // Under _lock.
    private void AddAttention(int nexus, Asc ua)
    {
        if (!_attention.TryGetValue(nexus, out var list))
        {
            list = new List<Asc>(2);
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
        int gate = (_attention.Count > 0 ? GateAttention : 0) | (_spc2Holder != NoNexus || _type != ReservationType.None ? GateReserved : 0);
        Volatile.Write(ref _gate, gate);
    }

    // Under _lock. A removed registration takes the reservation with it when it held it (SPC-4 5.12.11.2.3).
    private void Unregister(int nexus)
    {
        _registrants.Remove(nexus);
        if (_type == ReservationType.None)
        {
            return;
        }

        if (ReservationType.IsAllRegistrants(_type))
        {
            if (_registrants.Count == 0)
            {
                _type = ReservationType.None;
                _holder = NoNexus;
            }
        }
        else if (_holder == nexus)
        {
            ReleaseReservation(nexus);
        }
    }

    // Under _lock. Registrants-only and all-registrants reservations tell the other registrants (SPC-4 5.12.11.2.2).
    private void ReleaseReservation(int nexus)
    {
        if (ReservationType.LetsRegistrantsIn(_type))
        {
            foreach (int other in _registrants.Keys)
            {
                if (other != nexus)
                {
                    AddAttention(other, Asc.ReservationsReleased);
                }
            }
        }

        _type = ReservationType.None;
        _holder = NoNexus;
    }

    private sealed class Registrant(ulong key, string port)
    {
        public ulong Key { get; set; } = key;

        public string Port { get; } = port;
    }
}
