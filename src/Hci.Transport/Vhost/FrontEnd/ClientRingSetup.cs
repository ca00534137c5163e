using Hci.Core.Native;
using Tmds.Linux;

namespace Hci.Transport.Vhost;

/// <summary>
/// What the client hands a back-end to start its rings (SET_FEATURES, SET_MEM_TABLE, SET_INFLIGHT_FD, then per ring
/// num, base, addresses, kick, call, enable): made once at connection, and handed again, unchanged, to each back-end
/// it reconnects to. It owns the shared memory, the virtqueues and the in-flight area.
/// </summary>
internal sealed unsafe class ClientRingSetup : IDisposable
{
    /// <summary>Virtio features negotiated.</summary>
    public ulong Features { get; set; }

    /// <summary>Protocol features negotiated.</summary>
    public VhostUserProtocolFeatures Protocol { get; set; }

    /// <summary>Entries per virtqueue.</summary>
    public int QueueSize { get; set; }

    /// <summary>The memfd the shared memory lives in (the back-end maps it).</summary>
    public FileDescriptorHandle? MemoryFile { get; set; }

    /// <summary>The shared memory, mapped here.</summary>
    public byte* Memory { get; set; }

    /// <summary>Its length.</summary>
    public long MemorySize { get; set; }

    /// <summary>The virtqueues, laid out in the shared memory.</summary>
    public ClientVirtqueue[] Queues { get; set; } = [];

    /// <summary>The in-flight area the first back-end made (restart support), or null.</summary>
    public FileDescriptorHandle? Inflight { get; set; }

    /// <summary>Its length.</summary>
    public ulong InflightSize { get; set; }

    /// <summary>The front-end asked for a verdict on each message (REPLY_ACK).</summary>
    public bool ReplyAck => (Protocol & VhostUserProtocolFeatures.ReplyAck) != 0;

    /// <summary>Releases the virtqueues' eventfds, the mapping and the files.</summary>
    public void Dispose()
    {
        foreach (var q in Queues)
        {
            q.Dispose();
        }

        if (Memory != null)
        {
            LibC.munmap(Memory, (size_t)(ulong)MemorySize);
            Memory = null;
        }

        MemoryFile?.Dispose();
        Inflight?.Dispose();
    }
}
