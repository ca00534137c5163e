using System.Globalization;
using Hci.Core.Cluster;
using Hci.Core.Replication;

namespace Hci.Cli;

// hci volume scrub NAME: writes a request into the cluster store, which the volume's owner picks up at its next poll
// (every half second), and waits for the owner's result, showing its progress on a terminal.
internal static partial class HciCommand
{
    /// <summary>How long the owner may take to pick a request up before hci gives up waiting.</summary>
    private static readonly TimeSpan ScrubStartDeadline = TimeSpan.FromSeconds(30);

    /// <summary>How long a running scrub may go without writing progress before hci gives up waiting.</summary>
    private static readonly TimeSpan ScrubStallDeadline = TimeSpan.FromSeconds(60);

    private static readonly TimeSpan ScrubPoll = TimeSpan.FromMilliseconds(250);

    private static async Task<int> VolumeScrubAsync(ClusterCatalog catalog, string name, bool json, TextWriter output)
    {
        var request = await catalog.RequestScrubAsync(name).ConfigureAwait(false);
        bool terminal = !json && !Console.IsErrorRedirected;
        var waitingSince = DateTimeOffset.UtcNow;
        var lastUpdate = request.UpdatedAt;
        var record = request;
        while (record.State is ScrubState.Requested or ScrubState.Running)
        {
            await Task.Delay(ScrubPoll).ConfigureAwait(false);
            var now = DateTimeOffset.UtcNow;
            var read = await catalog.GetScrubAsync(name).ConfigureAwait(false);
            if (read is null || read.RequestId != request.RequestId)
            {
                throw new ClusterCatalogException(CatalogError.Contention, $"The scrub request for volume '{name}' was replaced or removed while hci waited for it (another hci volume scrub, or a deleted key). Run it again.");
            }

            record = read;
            if (record.UpdatedAt != lastUpdate)
            {
                lastUpdate = record.UpdatedAt;
                waitingSince = now;
            }

            if (record.State == ScrubState.Requested && now - waitingSince > ScrubStartDeadline)
            {
                var volume = await catalog.GetVolumeAsync(name).ConfigureAwait(false);
                throw new ClusterCatalogException(CatalogError.Invalid, $"The owner of volume '{name}' ({volume?.Owner ?? "none: it is detached"}) did not start the scrub within {ScrubStartDeadline.TotalSeconds:0} s: is it up (hci cluster status)? The request stays in the store and runs when the owner picks it up.");
            }

            if (record.State == ScrubState.Running && now - waitingSince > ScrubStallDeadline)
            {
                throw new ClusterCatalogException(CatalogError.Invalid, $"The scrub of volume '{name}' on {record.Node} reported no progress for {ScrubStallDeadline.TotalSeconds:0} s: is the node up (hci cluster status)? A new owner runs the request again after an attach.");
            }

            if (terminal && record.State == ScrubState.Running)
            {
                Console.Error.Write($"\rscrubbing {name} on {record.Node}: {record.ExtentsChecked}/{record.ExtentsTotal} extents, {FormatSize(record.BytesChecked)} checked, {record.BadBlocks} bad, {record.DivergingBlocks} diverging, {record.RepairedBlocks} repaired ");
            }
        }

        if (terminal)
        {
            Console.Error.WriteLine();
        }

        if (json)
        {
            output.WriteLine(ClusterCatalog.ToJson(record));
            return record.Repaired ? 0 : 1;
        }

        if (record.State == ScrubState.Failed)
        {
            output.WriteLine($"the scrub of volume {name} on {record.Node} failed: {record.Error}");
            return 1;
        }

        output.WriteLine($"scrubbed volume {name} on {record.Node}: {record.ExtentsChecked} extents, {FormatSize(record.BytesChecked)} of replica data checked in {record.Seconds.ToString("0.0", CultureInfo.InvariantCulture)} s{(record.BytesSkipped > 0 ? $" ({FormatSize(record.BytesSkipped)} not checked: replicas that did not answer)" : string.Empty)}.");
        output.WriteLine($"found {record.BadBlocks} bad and {record.DivergingBlocks} diverging block copies; repaired {record.RepairedBlocks}; {record.UnrecoverableBlocks} blocks unrecoverable{(record.RepairFailures > 0 ? $"; {record.RepairFailures} rewrites failed (those replicas are out of sync and get resynced)" : string.Empty)}.");
        foreach (var f in record.Findings)
        {
            string kind = f.Kind switch
            {
                ScrubFindingKind.Bad => "failed its checksum",
                ScrubFindingKind.Diverging => "differed from the majority",
                _ => "no good majority",
            };
            output.WriteLine($"  extent {f.Extent} byte {f.Offset} on {f.NodeId}/{f.Device}: {kind}, {(f.Repaired ? "repaired" : "not repaired")}");
        }

        long shown = record.Findings.Count;
        if (shown < record.BadBlocks + record.DivergingBlocks)
        {
            output.WriteLine($"  ... and {record.BadBlocks + record.DivergingBlocks - shown} more (the owner's log lists every one)");
        }

        output.WriteLine(record.Repaired
            ? record.BadBlocks + record.DivergingBlocks == 0 ? "the replicas are clean." : "everything found was repaired."
            : record.UnrecoverableBlocks > 0
                ? $"{record.UnrecoverableBlocks} blocks have no good majority and were left as they are: rewrite them through the volume, or restore them from a backup."
                : "some copies were not repaired: their replicas were marked out of sync and are resynced; scrub again afterwards.");
        return record.Repaired ? 0 : 1;
    }
}
