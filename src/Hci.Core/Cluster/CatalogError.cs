namespace Hci.Core.Cluster;

/// <summary>Why <see cref="ClusterCatalog"/> refused a request.</summary>
public enum CatalogError
{
    /// <summary>An argument is invalid (a name, a size, a replica count).</summary>
    Invalid,

    /// <summary>The volume (or extent) does not exist.</summary>
    NotFound,

    /// <summary>A volume of that name exists already.</summary>
    AlreadyExists,

    /// <summary>The volume is attached to another node.</summary>
    Owned,

    /// <summary>The volume is attached, and the request needs it detached.</summary>
    Attached,

    /// <summary>The cluster map cannot hold the replicas asked for.</summary>
    NoPlacement,

    /// <summary>The caller's epoch is no longer the volume's: it lost ownership.</summary>
    StaleEpoch,

    /// <summary>A record in the store could not be read (it is not the JSON Hci writes).</summary>
    Corrupt,

    /// <summary>Other writers kept changing the same record; the request gave up after many tries.</summary>
    Contention,
}
