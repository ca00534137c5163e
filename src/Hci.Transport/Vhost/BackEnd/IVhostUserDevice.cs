using Hci.Core.Native;

namespace Hci.Transport.Vhost;

/// <summary>
/// What a vhost-user device adds to the generic protocol (libvhost-user's <c>VuDevIface</c>): its features, its
/// config space, and what to do with a ring once the front-end has set it up. <see cref="VhostUserSession"/> calls
/// these on its control thread, after checking every message; the device never sees the socket.
/// </summary>
internal interface IVhostUserDevice
{
    /// <summary>Queues the device has (GET_QUEUE_NUM; ring indexes must be below it).</summary>
    int QueueCount { get; }

    /// <summary>Virtio features offered (<see cref="VhostUserMessage.ProtocolFeaturesBit"/> is added by the session).</summary>
    ulong Features { get; }

    /// <summary>Protocol features offered.</summary>
    VhostUserProtocolFeatures ProtocolFeatures { get; }

    /// <summary>Bytes of the config space a front-end may write (SET_CONFIG).</summary>
    int ConfigSize { get; }

    /// <summary>The front-end set the negotiated features (a subset of those offered, checked).</summary>
    /// <param name="features">The features.</param>
    void SetFeatures(ulong features);

    /// <summary>GET_CONFIG: copies config space from <paramref name="offset"/> (the window is checked).</summary>
    /// <param name="offset">Start of the window.</param>
    /// <param name="destination">Receives the window.</param>
    void ReadConfig(int offset, Span<byte> destination);

    /// <summary>SET_CONFIG: writes config space (the window is checked against <see cref="ConfigSize"/>).</summary>
    /// <param name="offset">Start of the window.</param>
    /// <param name="data">The bytes.</param>
    /// <returns>False to refuse the write.</returns>
    bool WriteConfig(int offset, ReadOnlySpan<byte> data);

    /// <summary>A ring is set up, enabled and inside guest memory: start serving it (libvhost-user's queue_set_started).</summary>
    /// <param name="ring">The ring, its eventfds and what a previous back-end left in flight.</param>
    /// <returns>False when it cannot start; the session leaves it stopped.</returns>
    bool StartRing(VringStart ring);

    /// <summary>Stops a started ring once its requests have completed.</summary>
    /// <param name="index">The ring.</param>
    /// <returns>The next available index it would have read (what GET_VRING_BASE reports).</returns>
    ushort StopRing(int index);

    /// <summary>The front-end replaced the call eventfd of a started ring (QEMU does while it runs).</summary>
    /// <param name="index">The ring.</param>
    /// <param name="call">The new eventfd, or null for none; the session owns it and closes the old one after this returns.</param>
    void SetCall(int index, FileDescriptorHandle? call);
}
