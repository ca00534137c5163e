namespace Hci.Testing;

/// <summary>What a read of a register block found: see <see cref="RegisterBlock.Decode"/>.</summary>
public enum RegisterObservationKind
{
    /// <summary>All zeros: the block as it was before any write.</summary>
    Zeros,

    /// <summary>A well-formed value: a writer's id and a sequence number.</summary>
    Value,

    /// <summary>Neither zeros nor a well-formed value of this block (a bad header or checksum).</summary>
    Corrupt,
}

/// <summary>What a read of a register block found.</summary>
/// <param name="Kind">Zeros, a value, or corrupt data.</param>
/// <param name="Writer">The value's writer (0 unless <see cref="RegisterObservationKind.Value"/>).</param>
/// <param name="Sequence">The value's sequence number (0 for zeros, -1 for corrupt data).</param>
/// <param name="Problem">What is wrong with corrupt data, else null.</param>
public readonly record struct RegisterObservation(RegisterObservationKind Kind, int Writer, long Sequence, string? Problem)
{
    /// <summary>The block before any write.</summary>
    public static RegisterObservation Zeros => new(RegisterObservationKind.Zeros, 0, 0, null);

    /// <summary>A value.</summary>
    /// <param name="writer">The writer's id.</param>
    /// <param name="sequence">The sequence number (from 1).</param>
    /// <returns>The observation.</returns>
    public static RegisterObservation Of(int writer, long sequence) => new(RegisterObservationKind.Value, writer, sequence, null);

    /// <summary>Corrupt data.</summary>
    /// <param name="problem">What is wrong.</param>
    /// <returns>The observation.</returns>
    public static RegisterObservation Corrupt(string problem) => new(RegisterObservationKind.Corrupt, 0, -1, problem);

    /// <inheritdoc/>
    public override string ToString() => Kind switch
    {
        RegisterObservationKind.Zeros => "zeros",
        RegisterObservationKind.Value => $"seq {Sequence} (writer {Writer})",
        _ => $"corrupt: {Problem}",
    };
}
