using Hci.Core.Blocks;

namespace Hci.Transport.Tests;

// The front-end contract (Hci.Testing's FrontEndContract): one list of guest-visible behaviours, run through each
// front-end over its real protocol.

/// <summary>The vhost-user client against the vhost-user-blk back-end.</summary>
public sealed class VhostUserFrontEndContractTests : FrontEndContract
{
    protected override Task<GuestDisk> ExportAsync(BlockDevice device) => Task.FromResult(VhostGuestDisk.Export(device));
}

/// <summary>A raw iSCSI initiator against the iSCSI target.</summary>
public sealed class IscsiFrontEndContractTests : FrontEndContract
{
    protected override Task<GuestDisk> ExportAsync(BlockDevice device) => IscsiGuestDisk.ExportAsync(device);
}
