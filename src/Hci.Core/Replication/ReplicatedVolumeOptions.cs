using Microsoft.Extensions.Logging;

namespace Hci.Core.Replication;

/// <summary>How a <see cref="ReplicatedVolume"/> behaves around failures and in the background.</summary>
public sealed class ReplicatedVolumeOptions
{
    /// <summary>How often replicas that are out of sync are probed, and resynced once they answer.</summary>
    /// <remarks>Default 1 s.</remarks>
    public TimeSpan ResyncInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>How long an extent must see no write before its regions may be marked clean in the replicas' activity
    /// logs (what a next owner would reconcile after a crash); <see cref="ActivityLogExtents"/> says how many idle
    /// extents stay in the logs all the same.</summary>
    /// <remarks>Default 30 s. A region marked clean costs one more durable metadata write on each replica when it is
    /// written again, so a short interval taxes a working set that moves slowly; a long one makes a next owner copy
    /// more after a crash.</remarks>
    public TimeSpan CleanAfter { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>How many written extents stay in the replicas' activity logs once idle: every
    /// <see cref="CleanAfter"/>, the extents idle since the previous look are marked clean, least recently written
    /// first, only while the volume holds more than this many written extents. 0: every idle extent is marked clean.
    /// </summary>
    /// <remarks>Default 256 (1 GiB of the default 4 MiB extents). An extent marked clean pays one more durable
    /// metadata write on each replica, before the data, for the first write to each of its regions afterwards: random
    /// writes over a volume whose extents were all marked clean after a pause paid it on most writes (a 4 KiB write at
    /// queue depth 1 with 3 replicas went from 0.26 to 0.8 ms on a shared disk). Keeping the recently written extents
    /// in the log, as DRBD keeps its activity log as a bounded set of hot extents, spares a working set up to this
    /// size; what it costs is what a next owner reconciles after a crash, at most this many extents' written regions
    /// beyond the ones written in the last <see cref="CleanAfter"/>. At most 1,048,576.</remarks>
    public int ActivityLogExtents { get; set; } = 256;

    /// <summary>How long an idle extent may stay in the activity log within <see cref="ActivityLogExtents"/>: once
    /// idle this long it is marked clean all the same.</summary>
    /// <remarks>Default 10 minutes; at least <see cref="CleanAfter"/> and at most 1 day. A store that opens recomputes
    /// the checksums of the blocks of its dirty regions that do not match their data (a torn write there is expected)
    /// and reads every dirty region to do so: a region that stays in the log keeps rot there from being told apart
    /// from a torn write, and makes the store's open longer. The limit bounds both to what was written recently.
    /// </remarks>
    public TimeSpan ActivityLogIdleLimit { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>The memory alignment the volume asks of request buffers (the local devices' O_DIRECT alignment).</summary>
    /// <remarks>Default 4096.</remarks>
    public int BufferAlignment { get; set; } = 4096;

    /// <summary>How fast a scrub reads replicas: bytes per second over all replicas of the volume together
    /// (<see cref="ReplicatedVolume.ScrubAsync"/>, and the background scrub).</summary>
    /// <remarks>Default 32 MiB/s: a 1 TiB volume with 3 replicas is scrubbed in about 27 hours, a small share of a
    /// device's bandwidth. Scrub I/O runs in the <see cref="Hci.Core.Blocks.IoClass.Background"/> class besides. At
    /// least 4096.</remarks>
    public long ScrubBytesPerSecond { get; set; } = 32L << 20;

    /// <summary>The fastest the volume copies replicas back into sync: bytes per second over all of the volume's
    /// recovery copies together (resync of replicas that missed writes, rebuild and rebalance moves); 0 for no pace at
    /// all (copies as fast as they go).</summary>
    /// <remarks>Default 256 MiB/s: a 1 TiB volume's lost replica is rebuilt in about 70 minutes at that rate. Within
    /// it, <see cref="RecoveryLatencyFactor"/> slows the copies while they hurt the client. Copies run in the
    /// <see cref="Hci.Core.Blocks.IoClass.Background"/> class besides. Rebuilds of several volumes run side by side,
    /// each paced on its own. Otherwise at least 4096.</remarks>
    public long RecoveryBytesPerSecond { get; set; } = 256L << 20;

    /// <summary>How much slower than before a recovery the client's reads and writes may get while it runs: the
    /// recovery's rate halves, every 100 ms, while the client's recent latency is above this factor times its latency
    /// before the recovery (down to 2 MiB/s, so a recovery always ends), and grows back by a quarter while it is not.
    /// 0: a fixed rate, <see cref="RecoveryBytesPerSecond"/>.</summary>
    /// <remarks>Default 1.5. Otherwise more than 1 and at most 100.</remarks>
    public double RecoveryLatencyFactor { get; set; } = 1.5;

    /// <summary>How often the volume scrubs itself in the background while attached: the first scrub starts this long
    /// after the attach, each next one this long after the previous one ended.</summary>
    /// <remarks>Default 7 days. <see cref="TimeSpan.Zero"/> or <see cref="Timeout.InfiniteTimeSpan"/>: no background
    /// scrub (<c>hci volume scrub</c> still runs one). Otherwise 1 second to 30 days.</remarks>
    public TimeSpan ScrubInterval { get; set; } = TimeSpan.FromDays(7);

    /// <summary>The clock scrub paces itself and schedules background scrubs by.</summary>
    /// <remarks>Default <see cref="TimeProvider.System"/>.</remarks>
    public TimeProvider TimeProvider { get; set; } = TimeProvider.System;

    /// <summary>Where the volume logs; null for none.</summary>
    public ILoggerFactory? LoggerFactory { get; set; }

    internal void Validate()
    {
        if (ResyncInterval <= TimeSpan.Zero || ResyncInterval > TimeSpan.FromHours(1))
        {
            throw new ArgumentException($"ReplicatedVolumeOptions.ResyncInterval must be more than 0 and at most 1 hour (was {ResyncInterval}).");
        }

        if (CleanAfter <= TimeSpan.Zero || CleanAfter > TimeSpan.FromHours(1))
        {
            throw new ArgumentException($"ReplicatedVolumeOptions.CleanAfter must be more than 0 and at most 1 hour (was {CleanAfter}).");
        }

        if (ActivityLogExtents < 0 || ActivityLogExtents > 1 << 20)
        {
            throw new ArgumentException($"ReplicatedVolumeOptions.ActivityLogExtents must be 0 (mark every idle extent clean) to 1048576 (was {ActivityLogExtents}).");
        }

        if (ActivityLogIdleLimit < CleanAfter || ActivityLogIdleLimit > TimeSpan.FromDays(1))
        {
            throw new ArgumentException($"ReplicatedVolumeOptions.ActivityLogIdleLimit must be at least CleanAfter ({CleanAfter}) and at most 1 day (was {ActivityLogIdleLimit}).");
        }

        if (ScrubBytesPerSecond < ReplicaGeometry.BlockSize)
        {
            throw new ArgumentException($"ReplicatedVolumeOptions.ScrubBytesPerSecond must be at least {ReplicaGeometry.BlockSize} (was {ScrubBytesPerSecond}).");
        }

        if (RecoveryLatencyFactor != 0 && !(RecoveryLatencyFactor > 1 && RecoveryLatencyFactor <= 100))
        {
            throw new ArgumentException($"ReplicatedVolumeOptions.RecoveryLatencyFactor must be 0 (a fixed rate) or more than 1 and at most 100 (was {RecoveryLatencyFactor}).");
        }

        if (RecoveryBytesPerSecond != 0 && RecoveryBytesPerSecond < ReplicaGeometry.BlockSize)
        {
            throw new ArgumentException($"ReplicatedVolumeOptions.RecoveryBytesPerSecond must be 0 (no pace) or at least {ReplicaGeometry.BlockSize} (was {RecoveryBytesPerSecond}).");
        }

        if (ScrubInterval != TimeSpan.Zero && ScrubInterval != Timeout.InfiniteTimeSpan && (ScrubInterval < TimeSpan.FromSeconds(1) || ScrubInterval > TimeSpan.FromDays(30)))
        {
            throw new ArgumentException($"ReplicatedVolumeOptions.ScrubInterval must be 1 second to 30 days, or zero or infinite for no background scrub (was {ScrubInterval}).");
        }

        if (TimeProvider is null)
        {
            throw new ArgumentException("ReplicatedVolumeOptions.TimeProvider must not be null (TimeProvider.System is the default).");
        }

        if (BufferAlignment < 1 || BufferAlignment > 4096 || !int.IsPow2(BufferAlignment))
        {
            throw new ArgumentException($"ReplicatedVolumeOptions.BufferAlignment must be a power of two up to 4096 (was {BufferAlignment}).");
        }
    }
}
