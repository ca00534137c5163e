using Hci.Transport.Vhost;

namespace Hci.Hosting;

/// <summary>
/// One vhost-user-blk socket of the host (configuration section <c>Hci:VhostUserBlk:NAME</c>): a device exported to
/// QEMU or to processes with the Hci client. The section's keys other than <see cref="Device"/> are those of
/// <see cref="VhostUserBlkServerOptions"/> (<c>SocketPath</c>, <c>Class</c>, <c>Tenant</c>, <c>TenantPerConnection</c>,
/// <c>AllowedUsers</c>, <c>AllowedGroups</c>, <c>MaxQueues</c>, <c>ReadOnly</c>, <c>Serial</c> ...), bound into
/// <see cref="Server"/>.
/// </summary>
public sealed class HciVhostUserBlkOptions
{
    /// <summary>The name of the device to export, one registered under <c>Hci:Devices</c>. Required.</summary>
    public string Device { get; set; } = "";

    /// <summary>
    /// The server's settings. <see cref="VhostUserBlkServerOptions.SocketPath"/> is required;
    /// <see cref="VhostUserBlkServerOptions.Serial"/> defaults to the socket's registration name, and
    /// <see cref="VhostUserBlkServerOptions.Reactors"/> is set by the host when <see cref="HciOptions.Reactors"/> asks
    /// for shared reactors.
    /// </summary>
    public VhostUserBlkServerOptions Server { get; } = new() { Serial = "" };
}
