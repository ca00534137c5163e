namespace Hci.Core.Cluster;

/// <summary>A node that is down, as the cluster store records it (<c>hci/down/&lt;node&gt;</c>).</summary>
/// <param name="Since">When the first node saw its alive key gone.</param>
/// <param name="RebuildAfterSeconds">How long it may stay down before its replicas are rebuilt elsewhere (the
/// recording node's setting, so every node counts down to the same moment).</param>
public sealed record NodeDownRecord(DateTimeOffset Since, double RebuildAfterSeconds)
{
    /// <summary>When its replicas are to be rebuilt elsewhere.</summary>
    public DateTimeOffset RebuildAt => Since + TimeSpan.FromSeconds(RebuildAfterSeconds);
}
