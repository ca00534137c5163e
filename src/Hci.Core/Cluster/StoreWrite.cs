namespace Hci.Core.Cluster;

/// <summary>A put (a value) or a delete (no value) in a transaction.</summary>
/// <param name="Key">The key.</param>
/// <param name="Value">The value to put, or null to delete the key.</param>
/// <param name="Lease">The lease to attach the key to (it goes when the lease lapses), or 0.</param>
public readonly record struct StoreWrite(string Key, ReadOnlyMemory<byte>? Value, long Lease = 0)
{
    /// <summary>A put.</summary>
    /// <param name="key">The key.</param>
    /// <param name="value">The value.</param>
    /// <param name="lease">The lease, or 0.</param>
    /// <returns>The write.</returns>
    public static StoreWrite Put(string key, ReadOnlyMemory<byte> value, long lease = 0) => new(key, value, lease);

    /// <summary>A delete.</summary>
    /// <param name="key">The key.</param>
    /// <returns>The write.</returns>
    public static StoreWrite Delete(string key) => new(key, null);
}
