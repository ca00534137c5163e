using System.Globalization;
using System.Text.RegularExpressions;

namespace Hci.Core.Cluster;

/// <summary>Checks of the names and addresses the cluster store keys and records carry.</summary>
internal static partial class ClusterNames
{
    /// <summary>Volume and node names: lower-case letters and digits first, then also '.', '_' and '-'; 63 at most
    /// (they appear in store keys and device ids, so never '/').</summary>
    [GeneratedRegex("^[a-z0-9][a-z0-9._-]{0,62}$", RegexOptions.CultureInvariant)]
    private static partial Regex NamePattern();

    [GeneratedRegex("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$", RegexOptions.CultureInvariant)]
    private static partial Regex DomainPattern();

    public static bool IsValidName(string? name) => name is not null && NamePattern().IsMatch(name);

    public static void CheckVolumeName(string? name)
    {
        if (!IsValidName(name))
        {
            throw new ClusterCatalogException(CatalogError.Invalid, $"'{name}' is not a valid volume name: use 1 to 63 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit (e.g. vm1-disk0).");
        }
    }

    public static void CheckNodeId(string? id)
    {
        if (!IsValidName(id))
        {
            throw new ClusterCatalogException(CatalogError.Invalid, $"'{id}' is not a valid node id: use 1 to 63 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit (e.g. node1).");
        }
    }

    public static void CheckDomain(string domain)
    {
        if (domain.Length > 255 || (domain.Length > 0 && !DomainPattern().IsMatch(domain)))
        {
            throw new ClusterCatalogException(CatalogError.Invalid, $"'{domain}' is not a valid failure-domain path: give parts of A-Z, a-z, 0-9, '.', '_' and '-' separated by '/', outermost first (e.g. rack1/host2), 255 characters at most.");
        }
    }

    public static void CheckAddress(string? address)
    {
        int colon = address?.LastIndexOf(':') ?? -1;
        if (address is null || colon <= 0 || !int.TryParse(address.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out int port) || port is < 1 or > 65535)
        {
            throw new ClusterCatalogException(CatalogError.Invalid, $"'{address}' is not a valid node address: give host:port (e.g. 10.0.0.5:7410 or [fd00::5]:7410).");
        }
    }
}
