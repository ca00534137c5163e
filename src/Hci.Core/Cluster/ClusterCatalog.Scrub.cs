using System.Globalization;
using System.Text.Json;

namespace Hci.Core.Cluster;

// Scrubs asked for by hand: the request and its outcome share one key per volume (hci/scrub/<volume>), written by
// compare-and-swap so that an owner only ever writes into the request it runs.
public sealed partial class ClusterCatalog
{
    private const string ScrubPrefix = "hci/scrub/";

    /// <summary>
    /// Asks the owner of <paramref name="volume"/> to scrub it now. When a scrub asked for earlier is still waiting or
    /// running, that one is returned instead (its result answers this request too).
    /// </summary>
    /// <param name="volume">The volume's name.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The request as stored (<see cref="ScrubState.Requested"/>, or the scrub already under way).</returns>
    /// <exception cref="ClusterCatalogException">The volume does not exist, or is detached (a scrub runs on the owner:
    /// attach it first).</exception>
    public async Task<ScrubRecord> RequestScrubAsync(string volume, CancellationToken cancellationToken = default)
    {
        for (int attempt = 0; attempt < MaxAttempts; attempt++)
        {
            var (record, _) = await RequireVolumeAsync(volume, cancellationToken).ConfigureAwait(false);
            if (record.Owner is null)
            {
                throw new ClusterCatalogException(CatalogError.Invalid, $"Volume '{volume}' is detached: a scrub runs on the volume's owner, which reads its replicas. Attach it first (hci volume attach {volume} --node ID), then scrub it.");
            }

            string key = ScrubPrefix + volume;
            var entry = await Store.GetAsync(key, cancellationToken).ConfigureAwait(false);
            if (entry is { } e)
            {
                var existing = ReadScrub(e);
                if (existing.State == ScrubState.Requested || (existing.State == ScrubState.Running && existing.Node == record.Owner))
                {
                    return existing;
                }
            }

            var request = new ScrubRecord
            {
                Volume = volume,
                RequestId = Guid.NewGuid().ToString("N", CultureInfo.InvariantCulture),
                RequestedAt = _time.GetUtcNow(),
                UpdatedAt = _time.GetUtcNow(),
                State = ScrubState.Requested,
            };
            if (await Store.TryCommitAsync([new StoreCondition(key, entry?.ModRevision ?? 0)], [StoreWrite.Put(key, JsonSerializer.SerializeToUtf8Bytes(request, ScrubJsonContext.Default.ScrubRecord))], cancellationToken).ConfigureAwait(false) is not null)
            {
                return request;
            }
        }

        throw Contention($"request a scrub of volume '{volume}'");
    }

    /// <summary>Reads a volume's last scrub asked for by hand.</summary>
    /// <param name="volume">The volume's name.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The record, or null when none was ever asked for.</returns>
    public async Task<ScrubRecord?> GetScrubAsync(string volume, CancellationToken cancellationToken = default)
    {
        ClusterNames.CheckVolumeName(volume);
        var entry = await Store.GetAsync(ScrubPrefix + volume, cancellationToken).ConfigureAwait(false);
        return entry is { } e ? ReadScrub(e) : null;
    }

    /// <summary>Lists every volume's last scrub asked for by hand (an owner looks for requests on its volumes here).</summary>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The records, by volume name.</returns>
    public async Task<IReadOnlyList<ScrubRecord>> ListScrubsAsync(CancellationToken cancellationToken = default)
    {
        var range = await Store.ListAsync(ScrubPrefix, cancellationToken).ConfigureAwait(false);
        return range.Entries.Select(ReadScrub).ToArray();
    }

    /// <summary>
    /// Writes a scrub's progress or result, as long as the stored record is still the same request and no other node
    /// runs it (a node that lost the volume cannot overwrite what the new owner writes).
    /// </summary>
    /// <param name="record">The record, with the <see cref="ScrubRecord.RequestId"/> of the request it answers and the
    /// <see cref="ScrubRecord.Node"/> running it.</param>
    /// <param name="takeOver">Write even when another node is recorded as running it (a new owner takes over a request
    /// its previous owner left running).</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>True when written; false when the request was replaced or removed meanwhile, or another node runs it.</returns>
    public async Task<bool> UpdateScrubAsync(ScrubRecord record, bool takeOver = false, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(record);
        ClusterNames.CheckVolumeName(record.Volume);
        string key = ScrubPrefix + record.Volume;
        for (int attempt = 0; attempt < MaxAttempts; attempt++)
        {
            var entry = await Store.GetAsync(key, cancellationToken).ConfigureAwait(false);
            if (entry is not { } e)
            {
                return false;
            }

            var stored = ReadScrub(e);
            if (stored.RequestId != record.RequestId || (!takeOver && stored.State != ScrubState.Requested && stored.Node != record.Node))
            {
                return false;
            }

            if (await Store.TryCommitAsync([new StoreCondition(key, e.ModRevision)], [StoreWrite.Put(key, JsonSerializer.SerializeToUtf8Bytes(record, ScrubJsonContext.Default.ScrubRecord))], cancellationToken).ConfigureAwait(false) is not null)
            {
                return true;
            }
        }

        throw Contention($"record the scrub of volume '{record.Volume}'");
    }

    /// <summary>The JSON of a scrub record, as <c>hci volume scrub --json</c> prints it.</summary>
    /// <param name="record">The record.</param>
    /// <returns>Indented JSON.</returns>
    public static string ToJson(ScrubRecord record) => JsonSerializer.Serialize(record, ScrubJsonContext.Default.ScrubRecord);

    private static ScrubRecord ReadScrub(StoreEntry entry)
    {
        try
        {
            return JsonSerializer.Deserialize(entry.Value.Span, ScrubJsonContext.Default.ScrubRecord) ?? throw new JsonException("null");
        }
        catch (JsonException ex)
        {
            throw new ClusterCatalogException(CatalogError.Corrupt, $"The record at '{entry.Key}' is not a valid scrub record ({ex.Message}): delete the key and ask for the scrub again.", ex);
        }
    }
}
