using Hci.Core.Blocks;
using Hci.Core.Devices;
using Hci.Core.Replication;
using Hci.Core.Storage;
using Hci.Testing.Replication;

namespace Hci.Testing;

/// <summary>
/// A node's device file opened offline, after its process has stopped: the replica store on it (io_uring engine, as the
/// hosts use) read through the store's own queue (<see cref="LocalReplicaChannel"/>), so a test can compare the
/// replicas' contents and checksums, or find where an extent's data lies in the file to damage it.
/// </summary>
public sealed class OfflineReplica : IAsyncDisposable
{
    private readonly BlockDevice _device;
    private readonly ReplicaStore _store;
    private readonly ReplicaNode _node;
    private readonly ReplicaProbe _probe;

    private OfflineReplica(BlockDevice device, ReplicaStore store)
    {
        _device = device;
        _store = store;
        _node = new ReplicaNode("offline", [store], ownsStores: false);
        _probe = new ReplicaProbe(_node, "offline");
    }

    /// <summary>The store's stats (checksum mismatches seen by the reads here).</summary>
    public ReplicaStoreStats Stats => _store.Stats;

    /// <summary>Opens the replica store on <paramref name="file"/>; its node must be stopped.</summary>
    /// <param name="file">A node's device file.</param>
    /// <returns>The open store.</returns>
    public static async Task<OfflineReplica> OpenAsync(string file)
    {
        var device = BlockDevices.Open(new BlockDeviceOptions { Engine = BlockEngine.IoUring, Path = file, Direct = true });
        try
        {
            var store = await ReplicaStore.OpenAsync(device).ConfigureAwait(false);
            return new OfflineReplica(device, store);
        }
        catch
        {
            await device.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Whether the store holds <paramref name="extent"/> of <paramref name="volume"/>.</summary>
    /// <param name="volume">The volume id.</param>
    /// <param name="extent">The extent index.</param>
    /// <returns>True when a slot is allocated to it.</returns>
    public bool Holds(ulong volume, long extent) => _store.FindSlot(volume, extent, out _) >= 0;

    /// <summary>Where the data of <paramref name="extent"/> starts in the device file.</summary>
    /// <param name="volume">The volume id.</param>
    /// <param name="extent">The extent index.</param>
    /// <returns>The byte offset in the file.</returns>
    public long DataOffset(ulong volume, long extent)
    {
        int slot = _store.FindSlot(volume, extent, out _);
        return slot >= 0 ? _store.SlotOffset(slot) : throw new InvalidOperationException($"the store on {_device.Name} holds no extent {extent} of volume {volume}");
    }

    /// <summary>Reads a range of an extent through the store (checksums verified), at the newest epoch it has seen.</summary>
    /// <param name="volume">The volume id.</param>
    /// <param name="extent">The extent index.</param>
    /// <param name="offset">The byte offset in the extent.</param>
    /// <param name="length">How many bytes (at most 4 MiB), read <see cref="ReplicaGeometry.MaxTransfer"/> at a time.</param>
    /// <returns>The first status other than <see cref="ReplicaStatus.Ok"/>, or Ok; and the bytes.</returns>
    public (ReplicaStatus Status, byte[] Data) Read(ulong volume, long extent, long offset, int length)
    {
        var data = new byte[length];
        for (int at = 0; at < length; at += ReplicaGeometry.MaxTransfer)
        {
            int n = Math.Min(ReplicaGeometry.MaxTransfer, length - at);
            var (status, part) = _probe.Read(volume, extent, offset + at, n, epoch: Math.Max(1, _store.GetEpoch(volume)));
            if (status != ReplicaStatus.Ok)
            {
                return (status, data);
            }

            part.CopyTo(data, at);
        }

        return (ReplicaStatus.Ok, data);
    }

    /// <summary>The stored checksums of a range, one per 4 KiB block.</summary>
    /// <param name="volume">The volume id.</param>
    /// <param name="extent">The extent index.</param>
    /// <param name="offset">The byte offset in the extent.</param>
    /// <param name="length">How many bytes.</param>
    /// <returns>The first status other than <see cref="ReplicaStatus.Ok"/>, or Ok; and the checksums.</returns>
    public (ReplicaStatus Status, uint[] Checksums) Checksums(ulong volume, long extent, long offset, int length)
    {
        var sums = new uint[length / ReplicaGeometry.BlockSize];
        for (int at = 0; at < length; at += ReplicaGeometry.MaxTransfer)
        {
            int n = Math.Min(ReplicaGeometry.MaxTransfer, length - at);
            var (status, part) = _probe.Checksums(volume, extent, offset + at, n, epoch: Math.Max(1, _store.GetEpoch(volume)));
            if (status != ReplicaStatus.Ok)
            {
                return (status, sums);
            }

            part.CopyTo(sums, at / ReplicaGeometry.BlockSize);
        }

        return (ReplicaStatus.Ok, sums);
    }

    /// <summary>Flips bits of one byte in a file, behind the store's back (a rotting disk).</summary>
    /// <param name="file">The device file; its node must be stopped.</param>
    /// <param name="offset">The byte to damage.</param>
    public static void FlipBits(string file, long offset)
    {
        using var stream = new FileStream(file, FileMode.Open, FileAccess.ReadWrite);
        stream.Position = offset;
        int b = stream.ReadByte();
        stream.Position = offset;
        stream.WriteByte((byte)(b ^ 0x5A));
        stream.Flush(flushToDisk: true);
    }

    /// <summary>Closes the store and the device.</summary>
    /// <returns>A task that completes when the device is closed.</returns>
    public async ValueTask DisposeAsync()
    {
        _probe.Dispose();
        _node.Dispose();
        _store.Dispose();
        await _device.DisposeAsync().ConfigureAwait(false);
    }
}
