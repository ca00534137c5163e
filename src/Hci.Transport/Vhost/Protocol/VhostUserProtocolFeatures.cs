namespace Hci.Transport.Vhost;

/// <summary>
/// vhost-user protocol feature bits (VHOST_USER_PROTOCOL_F_*, QEMU docs/interop/vhost-user.rst) that Hci's
/// back-end offers and its client asks for. Negotiated with GET/SET_PROTOCOL_FEATURES once both sides have
/// <see cref="VhostUserMessage.ProtocolFeaturesBit"/> among their virtio features.
/// </summary>
[Flags]
internal enum VhostUserProtocolFeatures : ulong
{
    /// <summary>None.</summary>
    None = 0,

    /// <summary>VHOST_USER_PROTOCOL_F_MQ: GET_QUEUE_NUM answers how many queues the back-end has.</summary>
    MultiQueue = 1UL << 0,

    /// <summary>VHOST_USER_PROTOCOL_F_REPLY_ACK: a message with the NEED_REPLY flag is answered with a verdict.</summary>
    ReplyAck = 1UL << 3,

    /// <summary>VHOST_USER_PROTOCOL_F_CONFIG: GET_CONFIG and SET_CONFIG reach the device's config space.</summary>
    Config = 1UL << 9,

    /// <summary>VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD: GET/SET_INFLIGHT_FD share the in-flight tracking area.</summary>
    InflightSharedMemory = 1UL << 12,
}
