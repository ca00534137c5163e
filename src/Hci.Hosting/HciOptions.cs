namespace Hci.Hosting;

/// <summary>Settings of Hci in a host as a whole (the root of the <c>Hci</c> configuration section).</summary>
public sealed class HciOptions
{
    /// <summary>
    /// Data-plane reactors shared by every vhost-user-blk socket of the host. Zero (the default): each socket starts
    /// reactors of its own (<see cref="Hci.Transport.Vhost.VhostUserBlkServerOptions.ReactorThreads"/>). A positive
    /// count puts all sockets on one group of that many reactors, so the sockets of one device share its queues and
    /// one scheduler sees them all: how the hybrid host serves VM and container sockets of a volume.
    /// </summary>
    public int Reactors { get; set; }

    /// <summary>
    /// How long the shared reactors (<see cref="Reactors"/>) poll after work before they sleep.
    /// <remarks>Default: 32 µs.</remarks>
    /// </summary>
    public TimeSpan PollWindow { get; set; } = TimeSpan.FromMicroseconds(32);

    /// <summary>
    /// Whether the health check reads one logical block of each device, so that a device which stopped answering or
    /// returns errors makes the host Unhealthy. <remarks>Default: true.</remarks>
    /// </summary>
    public bool HealthProbeReads { get; set; } = true;

    /// <summary>How long the health check's read of a device may take before the device counts as failed.
    /// <remarks>Default: 5 s.</remarks></summary>
    public TimeSpan HealthProbeTimeout { get; set; } = TimeSpan.FromSeconds(5);
}
