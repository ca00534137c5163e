namespace Hci.Transport.Vhost;

/// <summary>Settings of a <see cref="VhostUserBlkClient"/>.</summary>
public sealed class VhostUserBlkClientOptions
{
    /// <summary>The back-end's Unix socket.</summary>
    public string SocketPath { get; set; } = "";

    /// <summary>Virtqueues to set up, one per <see cref="Hci.Core.Blocks.BlockQueue"/>; 0 takes what the back-end offers (at most 8).</summary>
    public int QueueCount { get; set; }

    /// <summary>Entries per virtqueue: a power of two from 2 to 1024. A queue keeps at most this many requests at the back-end.</summary>
    public int QueueSize { get; set; } = 128;

    /// <summary>Largest transfer; also the size of each request's staging buffer in shared memory.</summary>
    public int MaxTransferBytes { get; set; } = 128 * 1024;

    /// <summary>
    /// Ask the back-end for no interrupts while the queue's owner keeps polling it (a reactor in its poll window):
    /// an interrupt is asked for only when a poll must wait, just before it sleeps on the call eventfd. How long to
    /// poll before sleeping is the owner's policy (<see cref="Hci.Core.Reactors.ReactorOptions.PollWindow"/>).
    /// </summary>
    public bool Polling { get; set; }

    /// <summary>Negotiate VIRTIO_RING_F_EVENT_IDX when offered.</summary>
    public bool EventIndex { get; set; } = true;

    /// <summary>How long to keep trying to connect (the back-end may still be starting), and to reconnect after it goes away.</summary>
    public TimeSpan ConnectTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Reconnect when the back-end goes away, resuming requests in flight (needs the back-end's INFLIGHT_SHMFD).</summary>
    public bool Reconnect { get; set; } = true;

    /// <summary>Checks the settings.</summary>
    /// <exception cref="ArgumentException">A setting is invalid; the message names it and says what to fix.</exception>
    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(SocketPath))
        {
            throw new ArgumentException("VhostUserBlkClientOptions.SocketPath is required: the back-end's Unix socket.");
        }

        if (System.Text.Encoding.UTF8.GetByteCount(SocketPath) > 107)
        {
            throw new ArgumentException($"VhostUserBlkClientOptions.SocketPath '{SocketPath}' is longer than a Unix socket path may be (107 bytes).");
        }

        if (QueueCount is < 0 or > 64)
        {
            throw new ArgumentException($"VhostUserBlkClientOptions.QueueCount must be from 1 to 64, or 0 for what the back-end offers (was {QueueCount}).");
        }

        if (QueueSize is < 2 or > 1024 || !int.IsPow2(QueueSize))
        {
            throw new ArgumentException($"VhostUserBlkClientOptions.QueueSize must be a power of two from 2 to 1024 (was {QueueSize}).");
        }

        if (MaxTransferBytes < 4096 || MaxTransferBytes > (4 << 20) || MaxTransferBytes % 4096 != 0)
        {
            throw new ArgumentException($"VhostUserBlkClientOptions.MaxTransferBytes must be a multiple of 4096 from 4 KiB to 4 MiB (was {MaxTransferBytes}).");
        }

        if (ConnectTimeout < TimeSpan.Zero)
        {
            throw new ArgumentException("VhostUserBlkClientOptions.ConnectTimeout must not be negative.");
        }
    }
}
