using System.Globalization;
using System.Text.Json;
using Hci.Core.Cluster;
using Hci.Samples.Shared;

namespace Hci.Cli;

// hci cluster status, rebuild part: each down node's countdown to its rebuild, each rebuild's progress (extents, bytes,
// MB/s, ETA; a bar on a terminal) as the volume's owner last reported it, and detached volumes that hold replicas on
// lost nodes (no owner rebuilds them until they are attached).
internal static partial class HciCommand
{
    private sealed record RebuildStatus(
        IReadOnlyDictionary<string, NodeDownRecord> Down,
        IReadOnlyList<RebuildProgress> Rebuilds,
        IReadOnlyList<(string Volume, long Extents)> DetachedOnDown,
        IReadOnlySet<string> Draining,
        DateTimeOffset Now);

    private static async Task<RebuildStatus> ReadRebuildStatusAsync(ClusterCatalog catalog, IReadOnlyList<VolumeRecord> volumes)
    {
        var down = await catalog.ListDownNodesAsync().ConfigureAwait(false);
        var rebuilds = await catalog.ListRebuildProgressAsync().ConfigureAwait(false);
        var draining = await catalog.ListDrainingNodesAsync().ConfigureAwait(false);
        var detached = new List<(string, long)>();
        if (down.Count > 0)
        {
            foreach (var volume in volumes.Where(v => v.Owner is null))
            {
                var extents = await catalog.GetExtentsAsync(volume.Id).ConfigureAwait(false);
                long count = extents.Count(e => e.Replicas.Any(r => down.ContainsKey(r.NodeId)));
                if (count > 0)
                {
                    detached.Add((volume.Name, count));
                }
            }
        }

        return new RebuildStatus(down, rebuilds.Where(r => volumes.Any(v => v.Name == r.Volume)).ToArray(), detached, draining, DateTimeOffset.UtcNow);
    }

    private static void WriteRebuildJson(Utf8JsonWriter w, RebuildStatus status)
    {
        w.WriteStartArray("down");
        foreach (var (node, down) in status.Down.OrderBy(d => d.Key, StringComparer.Ordinal))
        {
            w.WriteStartObject();
            w.WriteString("node", node);
            w.WriteString("since", down.Since);
            w.WriteString("rebuildAt", down.RebuildAt);
            w.WriteNumber("secondsToRebuild", Math.Max(0, Math.Round((down.RebuildAt - status.Now).TotalSeconds, 1)));
            w.WriteEndObject();
        }

        w.WriteEndArray();
        w.WriteStartArray("rebuilds");
        foreach (var r in status.Rebuilds)
        {
            w.WriteStartObject();
            w.WriteString("volume", r.Volume);
            w.WriteString("owner", r.Owner);
            w.WriteString("reason", r.Reason);
            w.WriteString("lostNodes", string.Join(",", r.LostNodes));
            w.WriteNumber("extentsTotal", r.ExtentsTotal);
            w.WriteNumber("extentsDone", r.ExtentsDone);
            w.WriteNumber("extentsFailed", r.ExtentsFailed);
            w.WriteNumber("bytesTotal", r.BytesTotal);
            w.WriteNumber("bytesDone", r.BytesDone);
            w.WriteNumber("bytesPerSecond", Math.Round(r.BytesPerSecond));
            if (!Stalled(r, status.Now) && Eta(r) is { } eta)
            {
                w.WriteNumber("etaSeconds", Math.Round(eta.TotalSeconds, 1));
            }

            w.WriteBoolean("finished", r.Finished);
            w.WriteBoolean("stalled", Stalled(r, status.Now));
            w.WriteString("startedAt", r.StartedAt);
            w.WriteString("updatedAt", r.UpdatedAt);
            w.WriteEndObject();
        }

        w.WriteEndArray();
        w.WriteStartArray("detachedToRebuild");
        foreach (var (volume, extents) in status.DetachedOnDown)
        {
            w.WriteStartObject();
            w.WriteString("volume", volume);
            w.WriteNumber("extents", extents);
            w.WriteEndObject();
        }

        w.WriteEndArray();
    }

    private static void WriteRebuildText(TextWriter output, RebuildStatus status)
    {
        bool terminal = ReferenceEquals(output, Console.Out) && !Console.IsOutputRedirected;
        foreach (var (node, down) in status.Down.OrderBy(d => d.Key, StringComparer.Ordinal))
        {
            var left = down.RebuildAt - status.Now;
            output.WriteLine(left > TimeSpan.Zero
                ? $"node {node} is down since {down.Since:u}: its replicas are rebuilt elsewhere in {DurationText.Format(left)} unless it comes back."
                : $"node {node} is down since {down.Since:u}: it is lost; its replicas are rebuilt on the live nodes.");
        }

        foreach (var r in status.Rebuilds)
        {
            string rate = (r.BytesPerSecond / 1e6).ToString("0.0", CultureInfo.InvariantCulture);
            if (r.Finished)
            {
                output.WriteLine($"{r.Reason} of {r.Volume} (owner {r.Owner}{Off(r)}) finished at {r.UpdatedAt:u}: {r.ExtentsDone} extents, {FormatSize(r.BytesDone)} at {rate} MB/s.");
                continue;
            }

            // The record comes from the store: a damaged one must not break the status (a bar of negative length).
            double fraction = r.BytesTotal <= 0 ? 1 : Math.Clamp((double)r.BytesDone / r.BytesTotal, 0, 1);
            string eta = Eta(r) is { } e ? DurationText.Format(e) : "unknown";
            string failed = r.ExtentsFailed > 0 ? $", {r.ExtentsFailed} failed (retried)" : string.Empty;
            string line = Stalled(r, status.Now)
                ? $"{r.ExtentsDone}/{r.ExtentsTotal} extents, {FormatSize(r.BytesDone)} of {FormatSize(r.BytesTotal)}; stalled: no report from its owner since {r.UpdatedAt:u} (the owner is down, or the volume was detached); it goes on when the volume is served again"
                : $"{r.ExtentsDone}/{r.ExtentsTotal} extents, {FormatSize(r.BytesDone)} of {FormatSize(r.BytesTotal)}, {rate} MB/s, ETA {eta}{failed}";
            if (terminal)
            {
                const int Width = 30;
                int filled = (int)Math.Round(fraction * Width);
                output.WriteLine($"{r.Reason} {r.Volume} [{new string('#', filled)}{new string('.', Width - filled)}] {fraction * 100,5:0.0}% {line}");
            }
            else
            {
                output.WriteLine($"{r.Reason} {r.Volume} (owner {r.Owner}{Off(r)}): {fraction * 100:0.0}% {line}");
            }
        }

        foreach (var (volume, extents) in status.DetachedOnDown)
        {
            output.WriteLine($"volume {volume} is detached and has {extents} extents with replicas on down nodes: it is rebuilt when it is attached (hci volume attach {volume} --node ID).");
        }
    }

    // An owner reports its rebuild once a second: a record this much older was left by an owner that stopped (killed,
    // or the volume detached), and its rate and ETA mean nothing now.
    private static readonly TimeSpan StalledAfter = TimeSpan.FromSeconds(15);

    private static bool Stalled(RebuildProgress r, DateTimeOffset now) => !r.Finished && now - r.UpdatedAt > StalledAfter;

    private static string Off(RebuildProgress r) => r.LostNodes.Count == 0 ? string.Empty : $", off {string.Join(",", r.LostNodes)}";

    // hci node drain | undrain | remove ID
    private static async Task<int> NodeCommandAsync(ClusterCatalog catalog, string verb, string node, TextWriter output)
    {
        switch (verb)
        {
            case "drain":
                await catalog.SetNodeDrainingAsync(node, true).ConfigureAwait(false);
                var held = await catalog.CountReplicasOnAsync(node).ConfigureAwait(false);
                output.WriteLine($"node {node} is draining: placement leaves it out, and the owners move its {held.Values.Sum()} extent replicas to other nodes (hci cluster status shows the progress; detached volumes move when attached). Remove it when it holds none: hci node remove {node}.");
                return 0;
            case "undrain":
                await catalog.SetNodeDrainingAsync(node, false).ConfigureAwait(false);
                output.WriteLine($"node {node} takes replicas again; extents placement gives it move back to it.");
                return 0;
            default:
                await catalog.RemoveNodeAsync(node).ConfigureAwait(false);
                output.WriteLine($"node {node} is removed from the cluster.");
                return 0;
        }
    }

    // Unknown when the record's rate or counts give no time a TimeSpan holds (a damaged record, or no rate yet).
    private static TimeSpan? Eta(RebuildProgress r)
    {
        if (r.Finished)
        {
            return TimeSpan.Zero;
        }

        double seconds = Math.Max(0, (double)r.BytesTotal - r.BytesDone) / r.BytesPerSecond;
        return r.BytesPerSecond > 0 && double.IsFinite(seconds) && seconds < TimeSpan.MaxValue.TotalSeconds / 2 ? TimeSpan.FromSeconds(seconds) : null;
    }
}
