using Hci.Transport.Iscsi;

namespace Hci.Hosting;

/// <summary>
/// One iSCSI target of the host (configuration section <c>Hci:Iscsi:NAME</c>): devices exported as LUNs to any
/// initiator. The section's keys other than <see cref="Luns"/> and <see cref="Insecure"/> are those of
/// <see cref="IscsiTargetOptions"/> (<c>Portal</c>, <c>TargetName</c>, <c>ChapUser</c>, <c>ChapSecret</c>,
/// <c>AllowedInitiators</c> ...), bound into <see cref="Target"/>. Keep secrets out of files: give
/// <c>Hci:Iscsi:NAME:ChapSecret</c> through the environment or a secrets provider.
/// </summary>
public sealed class HciIscsiTargetOptions
{
    /// <summary>The logical units: LUN number (0 to 16383) to the name of a device registered under
    /// <c>Hci:Devices</c>. At least one is required.</summary>
    public Dictionary<int, string> Luns { get; } = [];

    /// <summary>Let initiators log in without CHAP. Required (true) when no <see cref="IscsiTargetOptions.ChapUser"/>
    /// is given, so that a target open to anyone on the network is a decision, not an omission.
    /// <remarks>Default: false.</remarks></summary>
    public bool Insecure { get; set; }

    /// <summary>The target's settings; <see cref="IscsiTargetOptions.TargetName"/> (an IQN) is required.</summary>
    public IscsiTargetOptions Target { get; } = new();
}
