using System.Text.Json.Serialization;
using Hci.Core.Replication;

namespace Hci.Core.Cluster;

/// <summary>
/// A scrub asked for by hand and its outcome (<c>hci/scrub/&lt;volume&gt;</c>): <c>hci volume scrub</c> writes a request,
/// the volume's owner runs <see cref="ReplicatedVolume.ScrubAsync"/> and writes its progress and result back into the
/// same key, which stays as the volume's last scrub until the next request.
/// </summary>
public sealed record ScrubRecord
{
    /// <summary>The volume's name.</summary>
    public required string Volume { get; init; }

    /// <summary>The request's id: the owner writes only into the record of the request it runs.</summary>
    public required string RequestId { get; init; }

    /// <summary>When it was asked for.</summary>
    public DateTimeOffset RequestedAt { get; init; }

    /// <summary>Where it stands.</summary>
    [JsonConverter(typeof(JsonStringEnumConverter<ScrubState>))]
    public ScrubState State { get; init; }

    /// <summary>The node running (or that ran) it: the volume's owner.</summary>
    public string? Node { get; init; }

    /// <summary>When its progress or result was last written.</summary>
    public DateTimeOffset UpdatedAt { get; init; }

    /// <summary>Allocated extents checked.</summary>
    public long ExtentsChecked { get; init; }

    /// <summary>Allocated extents when the scrub started.</summary>
    public long ExtentsTotal { get; init; }

    /// <summary>Bytes read from replicas and checked (<see cref="ScrubResult.BytesChecked"/>).</summary>
    public long BytesChecked { get; init; }

    /// <summary>Bytes of replicas that did not answer (<see cref="ScrubResult.BytesSkipped"/>).</summary>
    public long BytesSkipped { get; init; }

    /// <summary>Block copies that failed their checksum.</summary>
    public long BadBlocks { get; init; }

    /// <summary>Block copies that differed from their replicas' majority.</summary>
    public long DivergingBlocks { get; init; }

    /// <summary>Block copies rewritten from the good majority.</summary>
    public long RepairedBlocks { get; init; }

    /// <summary>Block copies whose rewrite failed (their replica was marked out of sync).</summary>
    public long RepairFailures { get; init; }

    /// <summary>Blocks with no good majority, left as they are.</summary>
    public long UnrecoverableBlocks { get; init; }

    /// <summary>How long the scrub took, in seconds (when done).</summary>
    public double Seconds { get; init; }

    /// <summary>The first findings (<see cref="ScrubResult.Findings"/>), when done.</summary>
    public IReadOnlyList<ScrubFinding> Findings { get; init; } = [];

    /// <summary>Why it failed, with <see cref="ScrubState.Failed"/>.</summary>
    public string? Error { get; init; }

    /// <summary>True when it is done and every copy found bad or diverging was repaired (or none was).</summary>
    [JsonIgnore]
    public bool Repaired => State == ScrubState.Done && UnrecoverableBlocks == 0 && RepairFailures == 0 && RepairedBlocks == BadBlocks + DivergingBlocks;

    /// <summary>This record with a running scrub's progress.</summary>
    /// <param name="node">The node running it.</param>
    /// <param name="progress">Its progress.</param>
    /// <param name="now">The time of the update.</param>
    /// <returns>The updated record.</returns>
    public ScrubRecord WithProgress(string node, ScrubProgress progress, DateTimeOffset now) => this with
    {
        State = ScrubState.Running,
        Node = node,
        UpdatedAt = now,
        ExtentsChecked = progress.ExtentsChecked,
        ExtentsTotal = progress.ExtentsTotal,
        BytesChecked = progress.BytesChecked,
        BadBlocks = progress.BadBlocks,
        DivergingBlocks = progress.DivergingBlocks,
        RepairedBlocks = progress.RepairedBlocks,
        UnrecoverableBlocks = progress.UnrecoverableBlocks,
    };

    /// <summary>This record with a finished scrub's result.</summary>
    /// <param name="node">The node that ran it.</param>
    /// <param name="result">The result.</param>
    /// <param name="now">The time of the update.</param>
    /// <returns>The updated record.</returns>
    public ScrubRecord WithResult(string node, ScrubResult result, DateTimeOffset now)
    {
        ArgumentNullException.ThrowIfNull(result);
        return this with
        {
            State = ScrubState.Done,
            Node = node,
            UpdatedAt = now,
            ExtentsChecked = result.ExtentsChecked,
            ExtentsTotal = result.ExtentsChecked,
            BytesChecked = result.BytesChecked,
            BytesSkipped = result.BytesSkipped,
            BadBlocks = result.BadBlocks,
            DivergingBlocks = result.DivergingBlocks,
            RepairedBlocks = result.RepairedBlocks,
            RepairFailures = result.RepairFailures,
            UnrecoverableBlocks = result.UnrecoverableBlocks,
            Seconds = result.Duration.TotalSeconds,
            Findings = result.Findings,
        };
    }
}

/// <summary>Where a <see cref="ScrubRecord"/> stands.</summary>
public enum ScrubState
{
    /// <summary>Asked for; the owner has not started it yet.</summary>
    Requested = 0,

    /// <summary>The owner is running it.</summary>
    Running = 1,

    /// <summary>Finished: the counts are the result.</summary>
    Done = 2,

    /// <summary>It could not run or finish (<see cref="ScrubRecord.Error"/> says why).</summary>
    Failed = 3,
}

/// <summary>The JSON of scrub records, generated at build time (no reflection).</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull, WriteIndented = true)]
[JsonSerializable(typeof(ScrubRecord))]
internal sealed partial class ScrubJsonContext : JsonSerializerContext
{
}
