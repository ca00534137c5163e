using Microsoft.Extensions.DependencyInjection;

namespace Hci.Hosting;

/// <summary>
/// What <see cref="HciServiceCollectionExtensions.AddHci(IServiceCollection)"/> returns: adds devices, schedulers,
/// vhost-user-blk sockets and iSCSI targets to the host (see <see cref="HciBuilderExtensions"/>).
/// </summary>
public interface IHciBuilder
{
    /// <summary>The service collection Hci is registered in.</summary>
    IServiceCollection Services { get; }
}
