using System.Text.Json.Serialization;

namespace Hci.Core.Replication;

/// <summary>What a scrub of a <see cref="ReplicatedVolume"/> found and did (<see cref="ReplicatedVolume.ScrubAsync"/>).</summary>
/// <remarks>Counts are of block copies (one 4 KiB block on one replica) unless they say otherwise: a block whose three
/// replicas hold two good copies and one bad one counts one bad copy, repaired.</remarks>
public sealed class ScrubResult
{
    /// <summary>How many findings <see cref="Findings"/> keeps at most (the counts cover every one).</summary>
    public const int MaxFindings = 100;

    /// <summary>The volume's name.</summary>
    public required string Volume { get; init; }

    /// <summary>Allocated extents checked.</summary>
    public long ExtentsChecked { get; init; }

    /// <summary>Bytes read from replicas and checked against their stored checksums (every replica's copy counts).</summary>
    public long BytesChecked { get; init; }

    /// <summary>Bytes of in-sync replicas that could not be read (the replica did not answer): not checked by this scrub.</summary>
    public long BytesSkipped { get; init; }

    /// <summary>Block copies whose data did not match their stored checksum (rot, a torn or misdirected write).</summary>
    public long BadBlocks { get; init; }

    /// <summary>Block copies that were self-consistent but held other data than the majority of their replicas.</summary>
    public long DivergingBlocks { get; init; }

    /// <summary>Block copies rewritten from a replica holding the good majority's data.</summary>
    public long RepairedBlocks { get; init; }

    /// <summary>Block copies whose rewrite failed: their replica was marked out of sync, and resync copies the region to it.</summary>
    public long RepairFailures { get; init; }

    /// <summary>Blocks (not copies) with no good majority among their replicas (every copy bad, or good copies that
    /// disagree with no value held by more than half of them): reported, never rewritten by guessing.</summary>
    public long UnrecoverableBlocks { get; init; }

    /// <summary>The first <see cref="MaxFindings"/> block copies found bad, diverging or unrecoverable.</summary>
    public IReadOnlyList<ScrubFinding> Findings { get; init; } = [];

    /// <summary>How long the scrub took.</summary>
    public TimeSpan Duration { get; init; }

    /// <summary>True when nothing bad or diverging was found.</summary>
    public bool Clean => BadBlocks == 0 && DivergingBlocks == 0 && UnrecoverableBlocks == 0;

    /// <summary>True when every copy found bad or diverging was repaired and no block is unrecoverable.</summary>
    public bool Repaired => UnrecoverableBlocks == 0 && RepairFailures == 0 && RepairedBlocks == BadBlocks + DivergingBlocks;
}

/// <summary>One block copy a scrub found bad, diverging or unrecoverable.</summary>
/// <param name="Extent">The extent's index.</param>
/// <param name="Offset">The block's byte offset in the extent.</param>
/// <param name="NodeId">The replica's node.</param>
/// <param name="Device">The replica's device on the node.</param>
/// <param name="Kind">What was wrong with it.</param>
/// <param name="Repaired">Whether it was rewritten from a good copy.</param>
public readonly record struct ScrubFinding(long Extent, long Offset, string NodeId, int Device, ScrubFindingKind Kind, bool Repaired);

/// <summary>What a scrub found wrong with a block copy.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<ScrubFindingKind>))]
public enum ScrubFindingKind
{
    /// <summary>Its data did not match its stored checksum.</summary>
    Bad = 0,

    /// <summary>It was self-consistent but differed from the majority of its replicas.</summary>
    Diverging = 1,

    /// <summary>Its block has no good majority to repair from; it was left as it is.</summary>
    Unrecoverable = 2,
}

/// <summary>How far a running scrub has got (<see cref="ReplicatedVolume.ScrubAsync"/>).</summary>
/// <param name="ExtentsChecked">Allocated extents checked so far.</param>
/// <param name="ExtentsTotal">Allocated extents when the scrub started.</param>
/// <param name="BytesChecked">Bytes read from replicas and checked so far.</param>
/// <param name="BadBlocks">Bad block copies found so far.</param>
/// <param name="DivergingBlocks">Diverging block copies found so far.</param>
/// <param name="RepairedBlocks">Block copies repaired so far.</param>
/// <param name="UnrecoverableBlocks">Unrecoverable blocks found so far.</param>
public readonly record struct ScrubProgress(long ExtentsChecked, long ExtentsTotal, long BytesChecked, long BadBlocks, long DivergingBlocks, long RepairedBlocks, long UnrecoverableBlocks);
