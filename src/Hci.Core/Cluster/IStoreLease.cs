namespace Hci.Core.Cluster;

/// <summary>A lease kept alive by the store until disposed (disposing revokes it, and its keys go at once).</summary>
public interface IStoreLease : IAsyncDisposable
{
    /// <summary>The lease's id, for <see cref="StoreWrite.Lease"/>.</summary>
    long Id { get; }

    /// <summary>Completes when the lease is lost (it lapsed because the store could not be reached in time, or it was
    /// revoked): a node that loses its membership lease must stop acting as an owner.</summary>
    Task Lost { get; }
}
