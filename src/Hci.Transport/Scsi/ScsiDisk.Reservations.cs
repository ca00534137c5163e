using System.Buffers.Binary;

namespace Hci.Transport.Scsi;

/// <summary>
/// The reservation commands' CDBs and parameter lists (RESERVE, RELEASE, PERSISTENT RESERVE IN and OUT) decoded and
/// answered; the state and its rules are <see cref="PersistentReservations"/>, which the unit owns.
/// </summary>
public sealed partial class ScsiDisk
{
    // PERSISTENT RESERVE OUT parameter list (SPC-4 6.17.3): its one length, and the flags of byte 20.
    private const int ProutParameterLength = 24;
    private const byte ProutSpecIPt = 0x08;
    private const byte ProutAllTgPt = 0x04;
    private const byte ProutAptpl = 0x01;

    // RESERVE (10): third-party (3RDPTY) and long identifier (LONGID) reservations.
    private const byte Reserve10ThirdPartyOrLongId = 0x12;

    private readonly PersistentReservations _reservations = new();

    /// <summary>The unit's reservations (tests, diagnostics).</summary>
    internal PersistentReservations Reservations => _reservations;

    /// <summary>
    /// A logical unit reset (LOGICAL UNIT RESET, TARGET WARM RESET): releases SPC-2 reservations and gives every
    /// I_T nexus that has used the unit a unit attention (29h/03h). Persistent reservations stay (SPC-4 5.12.1).
    /// </summary>
    internal void Reset() => _reservations.Reset();

    /// <summary>
    /// The I_T nexus is gone (its session closed or failed): its SPC-2 reservation and pending unit attentions are
    /// dropped. Its persistent reservation registrations stay, as SPC-4 requires.
    /// </summary>
    /// <param name="nexus">The nexus (<see cref="ScsiTask.Nexus"/>).</param>
    internal void NexusLost(int nexus) => _reservations.NexusLost(nexus);

    /// <summary>True when the I_T nexus holds a persistent reservation registration on this unit.</summary>
    /// <param name="nexus">The nexus (<see cref="ScsiTask.Nexus"/>).</param>
    /// <returns>Whether it is registered.</returns>
    internal bool IsRegistered(int nexus) => _reservations.IsRegistered(nexus);

    /// <summary>
    /// Checks that any command may run now for its nexus: a pending unit attention (reported once, to every command
    /// but INQUIRY, REPORT LUNS and REQUEST SENSE) and reservation conflicts (SPC-4 table 44, SBC-3 table 13).
    /// </summary>
    /// <param name="task">The command.</param>
    /// <returns>True when it may run; false when the task's status has been set.</returns>
    internal bool Admit(ScsiTask task)
    {
        _reservations.Track(task.Nexus);
        return !_reservations.Gated || _reservations.Admit(task);
    }

    /// <summary>
    /// True when the task's nexus may still run it (checked again after waiting for the atomic lock: a PREEMPT AND
    /// ABORT may have fenced the nexus off meanwhile); else the task is refused with RESERVATION CONFLICT.
    /// </summary>
    private bool StillAdmitted(ScsiTask task)
    {
        if (_reservations.Conflicts(task.Cdb, task.Nexus))
        {
            task.Refuse(ScsiStatus.ReservationConflict);
            return false;
        }

        return true;
    }

    private void Reserve6(ScsiTask task)
    {
        if (task.Cdb[0] == ScsiOpcode.Reserve10 && (task.Cdb[1] & Reserve10ThirdPartyOrLongId) != 0)
        {
            task.Fail(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
            return;
        }

        Answer(task, _reservations.ReserveSpc2(task.Nexus));
    }

    private void Release6(ScsiTask task) => Answer(task, _reservations.ReleaseSpc2(task.Nexus));

    private void PersistentReserveIn(ScsiTask task)
    {
        int action = task.Cdb[1] & ScsiServiceAction.Mask;
        if (action > ScsiServiceAction.ReadFullStatus)
        {
            task.Fail(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
            return;
        }

        Reply(task, _reservations.ReadIn(action));
    }

    private async ValueTask PersistentReserveOut(ScsiTask task)
    {
        if (PersistentReserveOutNow(task) && (task.Cdb[1] & ScsiServiceAction.Mask) == ScsiServiceAction.PreemptAndAbort)
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
    private bool PersistentReserveOutNow(ScsiTask task)
    {
        byte[] cdb = task.Cdb;
        int action = cdb[1] & ScsiServiceAction.Mask;
        int scope = cdb[2] >> 4;
        byte type = (byte)(cdb[2] & 0x0F);
        uint listLength = BinaryPrimitives.ReadUInt32BigEndian(cdb.AsSpan(5));
        if (action > ScsiServiceAction.RegisterAndIgnoreExistingKey)
        {
            task.Fail(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb); // REGISTER AND MOVE and beyond: not supported
            return false;
        }

        if (listLength != ProutParameterLength || task.Buffer == null || task.ExpectedLength < ProutParameterLength)
        {
            task.Fail(SenseKey.IllegalRequest, Asc.ParameterListLengthError);
            return false;
        }

        var p = task.Buffer.Span[..ProutParameterLength];
        ulong key = BinaryPrimitives.ReadUInt64BigEndian(p);
        ulong serviceKey = BinaryPrimitives.ReadUInt64BigEndian(p[8..]);
        byte flags = p[20];
        bool registering = action is ScsiServiceAction.Register or ScsiServiceAction.RegisterAndIgnoreExistingKey;

        // SPEC_I_PT, ALL_TG_PT and APTPL are refused: REPORT CAPABILITIES says none is supported.
        if ((flags & (ProutSpecIPt | ProutAllTgPt | ProutAptpl)) != 0 && (registering || (flags & ProutAptpl) != 0))
        {
            task.Fail(SenseKey.IllegalRequest, Asc.InvalidFieldInParameterList);
            return false;
        }

        bool typed = action is ScsiServiceAction.Reserve or ScsiServiceAction.Release or ScsiServiceAction.Preempt or ScsiServiceAction.PreemptAndAbort;
        if (typed && (scope != 0 || !ReservationType.IsValid(type)))
        {
            task.Fail(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
            return false;
        }

        int nexus = task.Nexus;
        var result = action switch
        {
            ScsiServiceAction.Register => _reservations.Register(nexus, task.InitiatorPort, key, serviceKey, ignoreExisting: false),
            ScsiServiceAction.RegisterAndIgnoreExistingKey => _reservations.Register(nexus, task.InitiatorPort, key, serviceKey, ignoreExisting: true),
            ScsiServiceAction.Reserve => _reservations.Reserve(nexus, key, type),
            ScsiServiceAction.Release => _reservations.Release(nexus, key, type),
            ScsiServiceAction.Clear => _reservations.Clear(nexus, key),
            _ => _reservations.Preempt(nexus, key, serviceKey, type), // PREEMPT, PREEMPT AND ABORT (the abort: above)
        };
        Answer(task, result);
        return result == ReservationResult.Good && !registering;
    }

    private static void Answer(ScsiTask task, ReservationResult result)
    {
        switch (result)
        {
            case ReservationResult.Conflict:
                task.Refuse(ScsiStatus.ReservationConflict);
                break;
            case ReservationResult.InvalidParameter:
                task.Fail(SenseKey.IllegalRequest, Asc.InvalidFieldInParameterList);
                break;
            case ReservationResult.InvalidRelease:
                task.Fail(SenseKey.IllegalRequest, Asc.InvalidReleaseOfPersistentReservation);
                break;
        }
    }
}
