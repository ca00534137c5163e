namespace Hci.Transport.Vhost;

/// <summary>vhost-user front-end requests (QEMU docs/interop/vhost-user.rst) a virtio-blk back-end handles.</summary>
internal enum VhostUserRequest : uint
{
    /// <summary>No request.</summary>
    None = 0,
    /// <summary>Get the device's virtio features.</summary>
    GetFeatures = 1,
    /// <summary>Set the negotiated virtio features.</summary>
    SetFeatures = 2,
    /// <summary>Claim the session.</summary>
    SetOwner = 3,
    /// <summary>Obsolete reset.</summary>
    ResetOwner = 4,
    /// <summary>The guest's memory regions, with one fd each.</summary>
    SetMemTable = 5,
    /// <summary>Dirty log base (not supported).</summary>
    SetLogBase = 6,
    /// <summary>Dirty log fd (not supported).</summary>
    SetLogFd = 7,
    /// <summary>Queue size.</summary>
    SetVringNum = 8,
    /// <summary>Ring addresses in the front-end's virtual addresses.</summary>
    SetVringAddr = 9,
    /// <summary>Where to resume in the available ring.</summary>
    SetVringBase = 10,
    /// <summary>Stop a ring and report where it stopped.</summary>
    GetVringBase = 11,
    /// <summary>The kick eventfd.</summary>
    SetVringKick = 12,
    /// <summary>The call (interrupt) eventfd.</summary>
    SetVringCall = 13,
    /// <summary>The error eventfd.</summary>
    SetVringErr = 14,
    /// <summary>Get the protocol features.</summary>
    GetProtocolFeatures = 15,
    /// <summary>Set the protocol features.</summary>
    SetProtocolFeatures = 16,
    /// <summary>Number of queues.</summary>
    GetQueueNum = 17,
    /// <summary>Enable or disable a ring.</summary>
    SetVringEnable = 18,
    /// <summary>Read device config space.</summary>
    GetConfig = 24,
    /// <summary>Write device config space.</summary>
    SetConfig = 25,
    /// <summary>Get the shared in-flight tracking area.</summary>
    GetInflightFd = 31,
    /// <summary>Hand back the in-flight tracking area after a reconnect.</summary>
    SetInflightFd = 32,
    /// <summary>How many memory slots the back-end takes.</summary>
    GetMaxMemSlots = 36,
    /// <summary>Add one memory region.</summary>
    AddMemReg = 37,
    /// <summary>Remove one memory region.</summary>
    RemMemReg = 38,
}
