using Hci.Core.Blocks;
using Hci.Core.Buffers;
using Hci.Transport.Vhost;

namespace Hci.Testing;

/// <summary>
/// The guest's view through vhost-user: <see cref="VhostUserBlkClient"/> connected to a <see cref="VhostUserBlkServer"/>
/// that exports the device. Every request goes to the back-end as the guest sent it: the client's own checks
/// (range, read-only) are passed over, so that what answers is the back-end, as a guest's virtio-blk driver would
/// find it. virtio-blk names no causes: a refusal is VIRTIO_BLK_S_IOERR whatever the reason.
/// </summary>
internal sealed class VhostGuestDisk : GuestDisk
{
    private readonly VhostUserBlkServer _server;
    private readonly VhostUserBlkClient _client;
    private readonly string _dir;

    private VhostGuestDisk(VhostUserBlkServer server, VhostUserBlkClient client, string dir)
    {
        _server = server;
        _client = client;
        _dir = dir;
    }

    /// <inheritdoc/>
    public override int BlockSize => _client.Geometry.LogicalBlockSize;

    /// <inheritdoc/>
    public override long BlockCount => _client.Geometry.BlockCount;

    /// <inheritdoc/>
    public override int MaxTransferBlocks => _client.Geometry.MaxTransferBytes / BlockSize;

    /// <inheritdoc/>
    public override bool ReadOnly => _client.Supports(BlockDeviceCapabilities.ReadOnly);

    /// <inheritdoc/>
    public override bool OffersDiscard => _client.Supports(BlockDeviceCapabilities.Discard);

    /// <inheritdoc/>
    public override bool OffersWriteZeroes => _client.Supports(BlockDeviceCapabilities.WriteZeroes);

    /// <inheritdoc/>
    public override bool NamesCauses => false;

    /// <summary>Starts a back-end over <paramref name="device"/> on a fresh socket and connects the client to it.</summary>
    /// <param name="device">The device to export; not disposed here.</param>
    /// <returns>The guest's disk.</returns>
    public static GuestDisk Export(BlockDevice device)
    {
        string dir = Directory.CreateTempSubdirectory("hci-frontend-").FullName;
        string socket = Path.Combine(dir, "s.sock");
        var server = new VhostUserBlkServer(device, new VhostUserBlkServerOptions { SocketPath = socket, MaxQueues = 2, ReactorThreads = 1 });
        try
        {
            server.Start();
            return new VhostGuestDisk(server, VhostUserBlkClient.Connect(new VhostUserBlkClientOptions { SocketPath = socket, QueueSize = 64 }), dir);
        }
        catch
        {
            server.Dispose();
            Directory.Delete(dir, recursive: true);
            throw;
        }
    }

    /// <inheritdoc/>
    public override Task<GuestStatus> ReadAsync(long lba, byte[] into) => Task.FromResult(Run(BlockOperation.Read, lba, into.Length, into));

    /// <inheritdoc/>
    public override Task<GuestStatus> WriteAsync(long lba, byte[] data) => Task.FromResult(Run(BlockOperation.Write, lba, data.Length, data));

    /// <inheritdoc/>
    public override Task<GuestStatus> FlushAsync() => Task.FromResult(Run(BlockOperation.Flush, 0, 0, null));

    /// <inheritdoc/>
    public override Task<GuestStatus> DiscardAsync(long lba, int blocks) => Task.FromResult(Run(BlockOperation.Discard, lba, blocks * BlockSize, null));

    /// <inheritdoc/>
    public override Task<GuestStatus> WriteZeroesAsync(long lba, int blocks) => Task.FromResult(Run(BlockOperation.WriteZeroes, lba, blocks * BlockSize, null));

    /// <inheritdoc/>
    public override async ValueTask DisposeAsync()
    {
        await _client.DisposeAsync();
        _server.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    /// <summary>One request on a queue of its own, owned by this thread for its whole life, polled to its end.</summary>
    private unsafe GuestStatus Run(BlockOperation operation, long lba, int length, byte[]? data)
    {
        using var queue = _client.CreateQueue(1);
        using var buffer = new AlignedBuffer(Math.Max(length, BlockSize));
        using var request = new BlockRequest { Handler = new CompletionCounter() };
        long offset = checked(lba * BlockSize);
        switch (operation)
        {
            case BlockOperation.Read or BlockOperation.Write:
                if (operation == BlockOperation.Write)
                {
                    data!.CopyTo(buffer.Span);
                }

                request.SetReadWrite(operation, offset, buffer.Pointer, length);
                break;
            case BlockOperation.Flush:
                request.Operation = BlockOperation.Flush;
                break;
            default:
                request.SetRange(operation, offset, length);
                break;
        }

        queue.SubmitValidated(request); // the back-end judges the request, not the client
        Deadline.WaitUntil(
            () =>
            {
                queue.Poll(1, 100);
                return queue.InFlight == 0;
            },
            $"the back-end to answer a {operation}");
        if (request.Succeeded)
        {
            if (operation == BlockOperation.Read)
            {
                buffer.Span[..length].CopyTo(data!);
            }

            return GuestStatus.Good;
        }

        return request.Error == BlockError.Unsupported ? GuestStatus.Unsupported : GuestStatus.Error;
    }
}
