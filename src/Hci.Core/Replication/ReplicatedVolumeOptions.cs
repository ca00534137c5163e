using Microsoft.Extensions.Logging;

namespace Hci.Core.Replication;

/// <summary>How a <see cref="ReplicatedVolume"/> behaves around failures and in the background.</summary>
public sealed class ReplicatedVolumeOptions
{
    /// <summary>How often replicas that are out of sync are probed, and resynced once they answer.</summary>
    /// <remarks>Default 1 s.</remarks>
    public TimeSpan ResyncInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>How long an extent must see no write before its regions are marked clean in the replicas' activity
    /// logs (what a next owner would reconcile after a crash).</summary>
    /// <remarks>Default 30 s. A region marked clean costs one more durable metadata write on each replica when it is
    /// written again, so a short interval taxes a working set that moves slowly (DRBD keeps its activity log as an
    /// LRU of hot extents for the same reason); a long one makes a next owner copy more after a crash.</remarks>
    public TimeSpan CleanAfter { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>The memory alignment the volume asks of request buffers (the local devices' O_DIRECT alignment).</summary>
    /// <remarks>Default 4096.</remarks>
    public int BufferAlignment { get; set; } = 4096;

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

        if (BufferAlignment < 1 || BufferAlignment > 4096 || !int.IsPow2(BufferAlignment))
        {
            throw new ArgumentException($"ReplicatedVolumeOptions.BufferAlignment must be a power of two up to 4096 (was {BufferAlignment}).");
        }
    }
}
