using Hci.Transport.Scsi;

namespace Hci.Transport.Tests.Scsi;

/// <summary>
/// The reservation state of one logical unit on its own, with no unit, transport or socket: nexuses are numbers,
/// and each test reads what SPC-4 5.12 says the state must be after a sequence of service actions.
/// </summary>
public sealed class PersistentReservationsTests
{
    private const int A = 1;
    private const int B = 2;
    private const int C = 3;
    private const ulong KeyA = 0xAAAA;
    private const ulong KeyB = 0xBBBB;
    private const ulong KeyC = 0xCCCC;

    private static readonly byte[] Write10 = [ScsiOpcode.Write10, 0, 0, 0, 0, 0, 0, 0, 1, 0];
    private static readonly byte[] Read10 = [ScsiOpcode.Read10, 0, 0, 0, 0, 0, 0, 0, 1, 0];
    private static readonly byte[] Inquiry = [ScsiOpcode.Inquiry, 0, 0, 0, 36, 0];

    private readonly PersistentReservations _pr = new();

    [Fact]
    public void RegisterNeedsTheCurrentKeyUnlessItIgnoresItAndEachChangeCountsInTheGeneration()
    {
        Assert.Equal(ReservationResult.Good, _pr.Register(A, "a", 0, KeyA, ignoreExisting: false));
        Assert.Equal(KeyA, _pr.KeyOf(A));
        Assert.Equal(1u, _pr.Generation);

        // A wrong current key conflicts and changes nothing; REGISTER AND IGNORE EXISTING KEY does not look at it.
        Assert.Equal(ReservationResult.Conflict, _pr.Register(A, "a", 0x1234, 0x5678, ignoreExisting: false));
        Assert.Equal(KeyA, _pr.KeyOf(A));
        Assert.Equal(ReservationResult.Good, _pr.Register(A, "a", 0x1234, 0x5678, ignoreExisting: true));
        Assert.Equal(0x5678UL, _pr.KeyOf(A));
        Assert.Equal(2u, _pr.Generation);

        // A service key of zero unregisters.
        Assert.Equal(ReservationResult.Good, _pr.Register(A, "a", 0x5678, 0, ignoreExisting: false));
        Assert.Null(_pr.KeyOf(A));
        Assert.False(_pr.IsRegistered(A));
        Assert.Equal(3u, _pr.Generation);
    }

    [Fact]
    public void OnlyARegisteredNexusWithItsOwnKeyReserves()
    {
        Assert.Equal(ReservationResult.Conflict, _pr.Reserve(A, 0, ReservationType.WriteExclusive));
        Register(A, KeyA);
        Assert.Equal(ReservationResult.Conflict, _pr.Reserve(A, KeyB, ReservationType.WriteExclusive));
        Assert.Equal(ReservationResult.Good, _pr.Reserve(A, KeyA, ReservationType.WriteExclusive));
        Assert.Equal(ReservationType.WriteExclusive, _pr.Type);
        Assert.True(_pr.Holds(A));

        // The holder may restate it; another type, or another registrant, conflicts.
        Assert.Equal(ReservationResult.Good, _pr.Reserve(A, KeyA, ReservationType.WriteExclusive));
        Assert.Equal(ReservationResult.Conflict, _pr.Reserve(A, KeyA, ReservationType.ExclusiveAccess));
        Register(B, KeyB);
        Assert.Equal(ReservationResult.Conflict, _pr.Reserve(B, KeyB, ReservationType.WriteExclusive));
    }

    [Fact]
    public void WriteExclusiveLetsOtherNexusesReadButNotWriteAndExclusiveAccessLetsThemDoNeither()
    {
        Register(A, KeyA);
        Register(B, KeyB);
        Assert.Equal(ReservationResult.Good, _pr.Reserve(A, KeyA, ReservationType.WriteExclusive));
        Assert.False(_pr.Conflicts(Write10, A));
        Assert.True(_pr.Conflicts(Write10, B));
        Assert.False(_pr.Conflicts(Read10, B));
        Assert.True(_pr.Conflicts(Write10, C)); // not even registered
        Assert.False(_pr.Conflicts(Inquiry, C));

        Assert.Equal(ReservationResult.Good, _pr.Release(A, KeyA, ReservationType.WriteExclusive));
        Assert.Equal(ReservationResult.Good, _pr.Reserve(A, KeyA, ReservationType.ExclusiveAccess));
        Assert.True(_pr.Conflicts(Read10, B));
        Assert.True(_pr.Conflicts(Write10, B));
        Assert.False(_pr.Conflicts(Inquiry, B));
        Assert.False(_pr.Conflicts(Read10, A));
    }

    [Fact]
    public void RegistrantsOnlyTypesLetEveryRegistrantInAndAllRegistrantsTypesMakeEachAHolder()
    {
        Register(A, KeyA);
        Register(B, KeyB);
        Assert.Equal(ReservationResult.Good, _pr.Reserve(A, KeyA, ReservationType.ExclusiveAccessRegistrantsOnly));
        Assert.False(_pr.Conflicts(Write10, B));
        Assert.True(_pr.Conflicts(Read10, C));
        Assert.False(_pr.Holds(B));

        Assert.Equal(ReservationResult.Good, _pr.Release(A, KeyA, ReservationType.ExclusiveAccessRegistrantsOnly));
        Assert.Equal(ReservationResult.Good, _pr.Reserve(B, KeyB, ReservationType.WriteExclusiveAllRegistrants));
        Assert.True(_pr.Holds(A));
        Assert.True(_pr.Holds(B));
        Assert.True(_pr.Conflicts(Write10, C));
        Assert.False(_pr.Conflicts(Read10, C));
    }

    [Fact]
    public void ReleaseOfAnotherTypeIsInvalidAndReleaseOfARegistrantsOnlyReservationTellsTheOtherRegistrants()
    {
        Register(A, KeyA);
        Register(B, KeyB);
        Assert.Equal(ReservationResult.Good, _pr.Reserve(A, KeyA, ReservationType.WriteExclusiveRegistrantsOnly));

        // B holds nothing: GOOD, no change. A with the wrong type: INVALID RELEASE, still held.
        Assert.Equal(ReservationResult.Good, _pr.Release(B, KeyB, ReservationType.WriteExclusiveRegistrantsOnly));
        Assert.Equal(ReservationType.WriteExclusiveRegistrantsOnly, _pr.Type);
        Assert.Equal(ReservationResult.InvalidRelease, _pr.Release(A, KeyA, ReservationType.WriteExclusive));
        Assert.Equal(ReservationType.WriteExclusiveRegistrantsOnly, _pr.Type);

        Assert.Equal(ReservationResult.Good, _pr.Release(A, KeyA, ReservationType.WriteExclusiveRegistrantsOnly));
        Assert.Equal(ReservationType.None, _pr.Type);
        Assert.Equal(Asc.ReservationsReleased, _pr.TakeAttention(B));
        Assert.Null(_pr.TakeAttention(A));
        Assert.Null(_pr.TakeAttention(B));
    }

    [Fact]
    public void PreemptRemovesTheRegistrationsWithTheServiceKeyTakesTheReservationAndTellsThePreempted()
    {
        Register(A, KeyA);
        Register(B, KeyB);
        Register(C, KeyC);
        Assert.Equal(ReservationResult.Good, _pr.Reserve(A, KeyA, ReservationType.WriteExclusive));
        uint generation = _pr.Generation;

        Assert.Equal(ReservationResult.Good, _pr.Preempt(B, KeyB, KeyA, ReservationType.ExclusiveAccess));
        Assert.Null(_pr.KeyOf(A));
        Assert.True(_pr.Holds(B));
        Assert.Equal(ReservationType.ExclusiveAccess, _pr.Type);
        Assert.Equal(generation + 1, _pr.Generation);
        Assert.Equal(Asc.RegistrationsPreempted, _pr.TakeAttention(A));

        // The type changed: the registrant left (C) is told the reservation it knew went.
        Assert.Equal(Asc.ReservationsReleased, _pr.TakeAttention(C));

        // A key nobody holds conflicts; zero when the reservation is not all-registrants is an invalid parameter.
        Assert.Equal(ReservationResult.Conflict, _pr.Preempt(B, KeyB, 0x9999, ReservationType.ExclusiveAccess));
        Assert.Equal(ReservationResult.InvalidParameter, _pr.Preempt(C, KeyC, 0, ReservationType.ExclusiveAccess));
    }

    [Fact]
    public void PreemptWithServiceKeyZeroUnderAnAllRegistrantsReservationRemovesEveryOtherRegistrant()
    {
        Register(A, KeyA);
        Register(B, KeyB);
        Register(C, KeyC);
        Assert.Equal(ReservationResult.Good, _pr.Reserve(A, KeyA, ReservationType.ExclusiveAccessAllRegistrants));
        Assert.Equal(ReservationResult.Good, _pr.Preempt(C, KeyC, 0, ReservationType.WriteExclusive));
        Assert.Null(_pr.KeyOf(A));
        Assert.Null(_pr.KeyOf(B));
        Assert.True(_pr.Holds(C));
        Assert.Equal(ReservationType.WriteExclusive, _pr.Type);
    }

    [Fact]
    public void ClearDropsEveryRegistrationAndTheReservationAndTellsTheOthers()
    {
        Register(A, KeyA);
        Register(B, KeyB);
        Assert.Equal(ReservationResult.Good, _pr.Reserve(A, KeyA, ReservationType.ExclusiveAccess));
        Assert.Equal(ReservationResult.Conflict, _pr.Clear(C, KeyC));
        Assert.Equal(ReservationResult.Good, _pr.Clear(B, KeyB));
        Assert.Equal(ReservationType.None, _pr.Type);
        Assert.Null(_pr.KeyOf(A));
        Assert.Null(_pr.KeyOf(B));
        Assert.False(_pr.Reserved);
        Assert.Equal(Asc.ReservationsPreempted, _pr.TakeAttention(A));
        Assert.Null(_pr.TakeAttention(B));
    }

    [Fact]
    public void UnregisteringTheHolderReleasesItsReservation()
    {
        Register(A, KeyA);
        Assert.Equal(ReservationResult.Good, _pr.Reserve(A, KeyA, ReservationType.WriteExclusive));
        Assert.Equal(ReservationResult.Good, _pr.Register(A, "a", KeyA, 0, ignoreExisting: false));
        Assert.Equal(ReservationType.None, _pr.Type);
        Assert.False(_pr.Conflicts(Write10, B));
    }

    [Fact]
    public void Spc2ReservationShutsOtherNexusesOutUntilReleasedOrItsNexusIsLostAndPersistentOnesRefuseIt()
    {
        Assert.Equal(ReservationResult.Good, _pr.ReserveSpc2(A));
        Assert.True(_pr.Conflicts(Read10, B));
        Assert.False(_pr.Conflicts(Inquiry, B));
        Assert.False(_pr.Conflicts(Write10, A));
        Assert.Equal(ReservationResult.Conflict, _pr.ReserveSpc2(B));
        Assert.Equal(ReservationResult.Conflict, _pr.Register(B, "b", 0, KeyB, ignoreExisting: false));

        // RELEASE from another nexus is a no-op; losing the holder's nexus releases it.
        Assert.Equal(ReservationResult.Good, _pr.ReleaseSpc2(B));
        Assert.True(_pr.Conflicts(Write10, B));
        _pr.NexusLost(A);
        Assert.False(_pr.Conflicts(Write10, B));

        // With a registration in place, SPC-2 reservations conflict.
        Register(B, KeyB);
        Assert.Equal(ReservationResult.Conflict, _pr.ReserveSpc2(A));
    }

    [Fact]
    public void ResetTellsEveryKnownNexusOnceDropsTheSpc2ReservationAndKeepsPersistentOnes()
    {
        _pr.Track(A);
        _pr.Track(B);
        Register(A, KeyA);
        Assert.Equal(ReservationResult.Good, _pr.Reserve(A, KeyA, ReservationType.WriteExclusive));
        _pr.Reset();
        Assert.Equal(ReservationType.WriteExclusive, _pr.Type);

        var task = new ScsiTask { Nexus = B };
        Write10.CopyTo(task.Cdb, 0);
        Assert.True(_pr.Gated);
        Assert.False(_pr.Admit(task));
        Assert.Equal(ScsiStatus.CheckCondition, task.Status);
        Assert.Equal((SenseKey.UnitAttention, (byte)0x29, (byte)0x03), ((byte)(task.Sense[2] & 0x0F), task.Sense[12], task.Sense[13]));

        // Told once; then the reservation itself answers.
        task.Reset();
        task.Nexus = B;
        Write10.CopyTo(task.Cdb, 0);
        Assert.False(_pr.Admit(task));
        Assert.Equal(ScsiStatus.ReservationConflict, task.Status);

        // INQUIRY passes without taking A's attention, which the next command then gets.
        task.Reset();
        task.Nexus = A;
        Inquiry.CopyTo(task.Cdb, 0);
        Assert.True(_pr.Admit(task));
        Assert.Equal(Asc.BusDeviceResetOccurred, _pr.TakeAttention(A));
    }

    [Fact]
    public void ReadKeysAndReadReservationDescribeTheState()
    {
        Register(A, KeyA);
        Register(B, KeyB);
        Assert.Equal(ReservationResult.Good, _pr.Reserve(B, KeyB, ReservationType.ExclusiveAccess));
        var keys = _pr.ReadIn(ScsiServiceAction.ReadKeys);
        Assert.Equal(_pr.Generation, System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(keys));
        Assert.Equal(16u, System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(keys.AsSpan(4)));
        var reservation = _pr.ReadIn(ScsiServiceAction.ReadReservation);
        Assert.Equal(KeyB, System.Buffers.Binary.BinaryPrimitives.ReadUInt64BigEndian(reservation.AsSpan(8)));
        Assert.Equal(ReservationType.ExclusiveAccess, reservation[21]);
        var full = _pr.ReadIn(ScsiServiceAction.ReadFullStatus);
        Assert.Contains("b", System.Text.Encoding.UTF8.GetString(full));
    }

    private void Register(int nexus, ulong key) => Assert.Equal(ReservationResult.Good, _pr.Register(nexus, nexus == A ? "a" : nexus == B ? "b" : "c", 0, key, ignoreExisting: false));
}
