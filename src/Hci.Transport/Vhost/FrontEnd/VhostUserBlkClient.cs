using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using Hci.Core.Blocks;
using Hci.Core.Native;
using Hci.Transport.Virtio;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Tmds.Linux;

namespace Hci.Transport.Vhost;

/// <summary>
/// A vhost-user-blk front-end for processes and containers (the paper's hybrid: no I/O virtualization between a
/// container and the controller): it connects to any vhost-user-blk back-end (Hci's, qemu-storage-daemon, SPDK),
/// shares its own memory with it (a memfd), and drives split virtqueues itself. It is an Hci
/// <see cref="BlockDevice"/>: each <see cref="BlockQueue"/> owns one virtqueue, so hci-bench and applications use it
/// as any other device.
/// </summary>
/// <remarks>
/// <para>Buffers that lie in <see cref="SharedMemory"/> go to the back-end as they are; others are staged through a
/// per-request buffer in shared memory (one copy). Each request is one indirect descriptor table, so a queue of N
/// entries carries N requests whatever their segment count.</para>
/// <para>When the back-end goes away, the client reconnects (for <see cref="VhostUserBlkClientOptions.ConnectTimeout"/>)
/// and hands the new back-end the same memory, rings and in-flight record: requests in flight complete with no error.
/// If it cannot reconnect, requests in flight fail with ENOTCONN.</para>
/// </remarks>
public sealed unsafe class VhostUserBlkClient : BlockDevice
{
    private const ulong WantedFeatures = (1UL << VirtioBlkConfig.FeatureSizeMax) | (1UL << VirtioBlkConfig.FeatureSegMax) | (1UL << VirtioBlkConfig.FeatureReadOnly)
        | (1UL << VirtioBlkConfig.FeatureBlkSize) | (1UL << VirtioBlkConfig.FeatureFlush) | (1UL << VirtioBlkConfig.FeatureConfigWce) | (1UL << VirtioBlkConfig.FeatureMultiQueue)
        | (1UL << VirtioBlkConfig.FeatureDiscard) | (1UL << VirtioBlkConfig.FeatureWriteZeroes) | (1UL << VirtioBlkConfig.FeatureIndirectDescriptors)
        | (1UL << VirtioBlkConfig.FeatureVersion1) | VhostUserMessage.ProtocolFeaturesBit;

    private const VhostUserProtocolFeatures WantedProtocol = VhostUserProtocolFeatures.MultiQueue | VhostUserProtocolFeatures.ReplyAck
        | VhostUserProtocolFeatures.Config | VhostUserProtocolFeatures.InflightSharedMemory;

    private readonly VhostUserBlkClientOptions _options;
    private readonly ILogger _logger;
    private readonly ClientRingSetup _rings;
    private readonly ClientVirtqueue[] _queues;
    private readonly byte[] _payload = new byte[VhostUserHeader.MaxPayload];
    private readonly Lock _lock = new();
    private VhostUserChannel _channel;
    private Thread? _monitor;
    private volatile bool _closing;
    private int _reconnects;

    private VhostUserBlkClient(string name, BlockGeometry geometry, BlockDeviceCapabilities capabilities, Setup setup)
        : base(name, geometry, capabilities)
    {
        _options = setup.Options;
        _logger = setup.Logger;
        _channel = setup.Channel;
        _rings = setup.Rings;
        _queues = setup.Rings.Queues;
    }

    /// <summary>The shared memory the back-end sees: buffers inside it are transferred with no copy.</summary>
    public BlockSegment SharedMemory => new((nint)_rings.Memory, (nint)_rings.MemorySize);

    /// <summary>Virtio features negotiated with the back-end.</summary>
    public ulong NegotiatedFeatures => _rings.Features;

    /// <summary>How many times the client reconnected after losing the back-end.</summary>
    public int Reconnects => Volatile.Read(ref _reconnects);

    /// <summary>Virtqueues set up (the most <see cref="BlockQueue"/>s open at once).</summary>
    public int VirtqueueCount => _queues.Length;

    /// <inheritdoc/>
    public override string Engine => "vhost-user";

    /// <summary>Connects to a back-end, negotiates, shares memory and starts the virtqueues.</summary>
    /// <param name="options">Settings, validated here.</param>
    /// <param name="logger">Where to log; none by default.</param>
    /// <returns>The device.</returns>
    /// <exception cref="ArgumentException">The options are invalid.</exception>
    /// <exception cref="IOException">The back-end could not be reached or refused the set-up; the message says which step.</exception>
    public static VhostUserBlkClient Connect(VhostUserBlkClientOptions options, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        logger ??= NullLogger.Instance;
        var channel = new VhostUserChannel(ConnectSocket(options.SocketPath, options.ConnectTimeout));
        var setup = new Setup { Options = options, Logger = logger, Channel = channel };
        try
        {
            var client = Negotiate(setup);
            client._monitor = new Thread(client.Monitor) { IsBackground = true, Name = "hci-vhost-client" };
            client._monitor.Start();
            return client;
        }
        catch
        {
            setup.Release();
            throw;
        }
    }

    /// <inheritdoc/>
    protected override BlockQueue CreateQueueCore(int depth)
    {
        lock (_lock)
        {
            foreach (var vq in _queues)
            {
                if (!vq.InUse)
                {
                    vq.InUse = true;
                    return new ClientQueue(this, vq);
                }
            }
        }

        throw new InvalidOperationException($"All {_queues.Length} virtqueues of '{Name}' are in use: close a queue, or connect with a larger QueueCount (the back-end must offer it).");
    }

    /// <inheritdoc/>
    protected override void DisposeCore()
    {
        _closing = true;
        LibC.shutdown(_channel.Fd, LibC.SHUT_RDWR);
        _monitor?.Join();
        _channel.Dispose();
        _rings.Dispose();
    }

    private static int ConnectSocket(string path, TimeSpan timeout)
    {
        var watch = Stopwatch.StartNew();
        while (true)
        {
            int fd = LibC.socket(LibC.AF_UNIX, LibC.SOCK_STREAM | LibC.SOCK_CLOEXEC, 0);
            if (fd < 0)
            {
                throw new IOException($"Creating a Unix socket failed: {Errno.Describe(LibC.errno)}.");
            }

            var address = UnixSocketAddress.Create(path);

            if (LibC.connect(fd, (sockaddr*)&address, sizeof(sockaddr_un)) == 0)
            {
                return fd;
            }

            int errno = LibC.errno;
            new FileDescriptorHandle(fd).Dispose();
            if (watch.Elapsed >= timeout || errno is not (2 /* ENOENT */ or 111 /* ECONNREFUSED */ or Errno.EAGAIN))
            {
                throw new IOException($"Connecting to the vhost-user back-end at '{path}' failed: {Errno.Describe(errno)}. Is the back-end running and listening there?");
            }

            Thread.Sleep(50);
        }
    }

    private static VhostUserBlkClient Negotiate(Setup s)
    {
        var o = s.Options;
        var channel = s.Channel;
        ulong offered = Call(channel, s.Payload, VhostUserRequest.GetFeatures, default, "GET_FEATURES");
        if ((offered & (1UL << VirtioBlkConfig.FeatureVersion1)) == 0 || (offered & VhostUserMessage.ProtocolFeaturesBit) == 0)
        {
            throw new IOException("The back-end offers neither VIRTIO_F_VERSION_1 nor vhost-user protocol features; this client needs both.");
        }

        if ((offered & (1UL << VirtioBlkConfig.FeatureIndirectDescriptors)) == 0)
        {
            throw new IOException("The back-end does not offer indirect descriptors (VIRTIO_RING_F_INDIRECT_DESC); this client needs them.");
        }

        ulong features = offered & WantedFeatures;
        if (o.EventIndex)
        {
            features |= offered & (1UL << VirtioBlkConfig.FeatureEventIndex);
        }

        var protocolOffered = (VhostUserProtocolFeatures)Call(channel, s.Payload, VhostUserRequest.GetProtocolFeatures, default, "GET_PROTOCOL_FEATURES");
        var protocol = protocolOffered & WantedProtocol;
        var rings = s.Rings;
        rings.Protocol = protocol;
        rings.QueueSize = o.QueueSize;
        if ((protocol & VhostUserProtocolFeatures.Config) == 0)
        {
            throw new IOException("The back-end does not offer VHOST_USER_PROTOCOL_F_CONFIG; the client needs it to read the disk's capacity.");
        }

        Span<byte> u64 = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(u64, (ulong)protocol);
        Send(channel, s.Payload, VhostUserRequest.SetProtocolFeatures, u64, default, rings.ReplyAck, "SET_PROTOCOL_FEATURES");
        int backendQueues = 1;
        if ((protocol & VhostUserProtocolFeatures.MultiQueue) != 0)
        {
            backendQueues = (int)Math.Min(Call(channel, s.Payload, VhostUserRequest.GetQueueNum, default, "GET_QUEUE_NUM"), 64);
        }

        // Config: capacity, blk_size, seg_max, size_max, num_queues.
        Span<byte> config = stackalloc byte[12 + VirtioBlkConfig.Size];
        config.Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(config[4..], VirtioBlkConfig.Size);
        var reply = Exchange(channel, s.Payload, VhostUserRequest.GetConfig, config, default, "GET_CONFIG");
        if (reply.Length != config.Length)
        {
            throw new IOException($"The back-end answered GET_CONFIG with {reply.Length} bytes (expected {config.Length}).");
        }

        var c = reply[12..];
        long capacity = (long)Math.Min(BinaryPrimitives.ReadUInt64LittleEndian(c), (ulong)long.MaxValue / VirtioBlk.SectorSize) * VirtioBlk.SectorSize;
        int sizeMax = (features & (1UL << VirtioBlkConfig.FeatureSizeMax)) != 0 ? (int)Math.Min(BinaryPrimitives.ReadUInt32LittleEndian(c[8..]), int.MaxValue) : 0;
        int segMax = (features & (1UL << VirtioBlkConfig.FeatureSegMax)) != 0 ? (int)BinaryPrimitives.ReadUInt32LittleEndian(c[12..]) : 1;
        int blkSize = (features & (1UL << VirtioBlkConfig.FeatureBlkSize)) != 0 ? (int)BinaryPrimitives.ReadUInt32LittleEndian(c[20..]) : VirtioBlk.SectorSize;
        if ((features & (1UL << VirtioBlkConfig.FeatureMultiQueue)) != 0)
        {
            backendQueues = Math.Min(backendQueues, Math.Max((int)BinaryPrimitives.ReadUInt16LittleEndian(c[34..]), 1));
        }

        if (blkSize < VirtioBlk.SectorSize || blkSize > 65536 || !int.IsPow2(blkSize))
        {
            throw new IOException($"The back-end reports a block size of {blkSize} bytes; expected a power of two from 512 to 65536.");
        }

        if (capacity < blkSize)
        {
            throw new IOException($"The back-end reports a capacity of {capacity} bytes.");
        }

        segMax = Math.Clamp(segMax == 0 ? 1 : segMax, 1, 254);
        if (sizeMax == 0 || sizeMax < 512)
        {
            sizeMax = o.MaxTransferBytes;
        }

        int queues = o.QueueCount == 0 ? Math.Min(backendQueues, 8) : o.QueueCount;
        if (queues > backendQueues)
        {
            throw new IOException($"The back-end offers {backendQueues} queue(s); {queues} were asked for.");
        }

        Send(channel, s.Payload, VhostUserRequest.SetOwner, default, default, rings.ReplyAck, "SET_OWNER");

        // Shared memory: per queue, its rings and, per entry, a header, status, indirect table and staging buffer.
        int maxTransfer = o.MaxTransferBytes;
        int tableEntries = segMax + 2;
        int stagingSegments = (maxTransfer + sizeMax - 1) / sizeMax;
        if (stagingSegments > segMax)
        {
            maxTransfer = segMax * sizeMax / 4096 * 4096;
            stagingSegments = segMax;
        }

        long layoutBytes = 0;
        var layouts = new ClientVirtqueue.Layout[queues];
        for (int i = 0; i < queues; i++)
        {
            layouts[i] = new ClientVirtqueue.Layout(o.QueueSize, tableEntries, maxTransfer, layoutBytes);
            layoutBytes += layouts[i].Bytes;
        }

        fixed (byte* name = "hci-vhost-client\0"u8)
        {
            rings.MemoryFile = new FileDescriptorHandle(LibC.memfd_create(name, LibC.MFD_CLOEXEC | 0x2 /* MFD_ALLOW_SEALING */));
        }

        int memFd = rings.MemoryFile.Fd;
        if (rings.MemoryFile.IsInvalid || LibC.ftruncate(memFd, layoutBytes) != 0)
        {
            throw new IOException($"Creating {layoutBytes} bytes of shared memory failed: {Errno.Describe(LibC.errno)}.");
        }

        LibC.fcntl(memFd, LibC.F_ADD_SEALS, LibC.F_SEAL_SHRINK | LibC.F_SEAL_GROW);
        void* memory = LibC.mmap(null, (size_t)(ulong)layoutBytes, LibC.PROT_READ | LibC.PROT_WRITE, LibC.MAP_SHARED, memFd, 0);
        if (memory == (void*)-1)
        {
            throw new IOException($"Mapping the shared memory failed: {Errno.Describe(LibC.errno)}.");
        }

        rings.Memory = (byte*)memory;
        rings.MemorySize = layoutBytes;
        bool eventIdx = (features & (1UL << VirtioBlkConfig.FeatureEventIndex)) != 0;
        var vqs = new ClientVirtqueue[queues];
        rings.Queues = vqs;
        for (int i = 0; i < queues; i++)
        {
            vqs[i] = new ClientVirtqueue(i, layouts[i], rings.Memory, sizeMax, eventIdx, o.Polling);
        }

        // In-flight record (restart support), when offered.
        if ((protocol & VhostUserProtocolFeatures.InflightSharedMemory) != 0)
        {
            Span<byte> inflight = stackalloc byte[24];
            inflight.Clear();
            BinaryPrimitives.WriteUInt16LittleEndian(inflight[16..], (ushort)queues);
            BinaryPrimitives.WriteUInt16LittleEndian(inflight[18..], (ushort)o.QueueSize);
            var answer = ExchangeWithFd(channel, s.Payload, VhostUserRequest.GetInflightFd, inflight, "GET_INFLIGHT_FD", out var area);
            ulong size = answer.Length >= 8 ? BinaryPrimitives.ReadUInt64LittleEndian(answer) : 0;
            if (area != null && size > 0)
            {
                rings.Inflight = area;
                rings.InflightSize = size;
            }
            else
            {
                area?.Dispose();
            }
        }

        rings.Features = features;
        StartRings(s.Channel, s.Payload, rings);

        var caps = BlockDeviceCapabilities.None;
        bool readOnly = (features & (1UL << VirtioBlkConfig.FeatureReadOnly)) != 0;
        if (readOnly)
        {
            caps |= BlockDeviceCapabilities.ReadOnly;
        }

        if ((features & (1UL << VirtioBlkConfig.FeatureFlush)) != 0)
        {
            caps |= BlockDeviceCapabilities.Flush;
        }

        if (!readOnly && (features & (1UL << VirtioBlkConfig.FeatureDiscard)) != 0)
        {
            caps |= BlockDeviceCapabilities.Discard;
        }

        if (!readOnly && (features & (1UL << VirtioBlkConfig.FeatureWriteZeroes)) != 0)
        {
            caps |= BlockDeviceCapabilities.WriteZeroes;
        }

        var geometry = new BlockGeometry(blkSize, capacity / blkSize * blkSize, maxTransfer / blkSize * blkSize, Math.Min(segMax, BlockRequest.MaxSegmentsLimit), bufferAlignment: 1, queueCount: queues);
        var client = new VhostUserBlkClient($"vhost-user:{o.SocketPath}", geometry, caps, s);
        s.Owned = false;
        return client;
    }

    // Memory table, in-flight record, then every ring: num, base, addresses, kick, call, enable.
    private static void StartRings(VhostUserChannel channel, byte[] payload, ClientRingSetup rings)
    {
        bool ack = rings.ReplyAck;
        var queues = rings.Queues;
        Span<byte> u64 = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(u64, rings.Features);
        Send(channel, payload, VhostUserRequest.SetFeatures, u64, default, ack, "SET_FEATURES");

        Span<byte> table = stackalloc byte[8 + 32];
        table.Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(table, 1);
        BinaryPrimitives.WriteUInt64LittleEndian(table[8..], 0); // guest physical address: offsets in the memfd
        BinaryPrimitives.WriteUInt64LittleEndian(table[16..], (ulong)rings.MemorySize);
        BinaryPrimitives.WriteUInt64LittleEndian(table[24..], (ulong)rings.Memory);
        BinaryPrimitives.WriteUInt64LittleEndian(table[32..], 0);
        Span<int> fd = stackalloc int[1];
        fd[0] = rings.MemoryFile!.Fd;
        Send(channel, payload, VhostUserRequest.SetMemTable, table, fd, ack, "SET_MEM_TABLE");

        if (rings.Inflight is { } area)
        {
            Span<byte> inflight = stackalloc byte[24];
            inflight.Clear();
            BinaryPrimitives.WriteUInt64LittleEndian(inflight, rings.InflightSize);
            BinaryPrimitives.WriteUInt16LittleEndian(inflight[16..], (ushort)queues.Length);
            BinaryPrimitives.WriteUInt16LittleEndian(inflight[18..], (ushort)rings.QueueSize);
            fd[0] = area.Fd;
            Send(channel, payload, VhostUserRequest.SetInflightFd, inflight, fd, ack, "SET_INFLIGHT_FD");
        }

        Span<byte> state = stackalloc byte[8];
        Span<byte> addr = stackalloc byte[40];
        foreach (var q in queues)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(state, (uint)q.Index);
            BinaryPrimitives.WriteUInt32LittleEndian(state[4..], (uint)q.Size);
            Send(channel, payload, VhostUserRequest.SetVringNum, state, default, ack, "SET_VRING_NUM");

            // Resume where the back-end must: everything before the used index was answered.
            BinaryPrimitives.WriteUInt32LittleEndian(state[4..], q.UsedIndex);
            Send(channel, payload, VhostUserRequest.SetVringBase, state, default, ack, "SET_VRING_BASE");

            addr.Clear();
            BinaryPrimitives.WriteUInt32LittleEndian(addr, (uint)q.Index);
            BinaryPrimitives.WriteUInt64LittleEndian(addr[8..], (ulong)q.Descriptors);
            BinaryPrimitives.WriteUInt64LittleEndian(addr[16..], (ulong)q.Used);
            BinaryPrimitives.WriteUInt64LittleEndian(addr[24..], (ulong)q.Avail);
            Send(channel, payload, VhostUserRequest.SetVringAddr, addr, default, ack, "SET_VRING_ADDR");

            BinaryPrimitives.WriteUInt64LittleEndian(u64, (ulong)q.Index);
            fd[0] = q.Kick.Fd;
            Send(channel, payload, VhostUserRequest.SetVringKick, u64, fd, ack, "SET_VRING_KICK");
            fd[0] = q.Call.Fd;
            Send(channel, payload, VhostUserRequest.SetVringCall, u64, fd, ack, "SET_VRING_CALL");
        }

        foreach (var q in queues)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(state, (uint)q.Index);
            BinaryPrimitives.WriteUInt32LittleEndian(state[4..], 1);
            Send(channel, payload, VhostUserRequest.SetVringEnable, state, default, ack, "SET_VRING_ENABLE");
            q.KickNow(); // a restarted back-end finds what is already in the ring
        }
    }

    private static ulong Call(VhostUserChannel channel, byte[] payload, VhostUserRequest request, ReadOnlySpan<byte> body, string name)
    {
        var reply = Exchange(channel, payload, request, body, default, name);
        if (reply.Length != 8)
        {
            throw new IOException($"The back-end answered {name} with {reply.Length} bytes (expected 8).");
        }

        return BinaryPrimitives.ReadUInt64LittleEndian(reply);
    }

    private static ReadOnlySpan<byte> Exchange(VhostUserChannel channel, byte[] payload, VhostUserRequest request, ReadOnlySpan<byte> body, ReadOnlySpan<int> fds, string name)
    {
        var reply = ExchangeCore(channel, payload, request, body, fds, name, out var received);
        received?.Dispose();
        return reply;
    }

    private static ReadOnlySpan<byte> ExchangeWithFd(VhostUserChannel channel, byte[] payload, VhostUserRequest request, ReadOnlySpan<byte> body, string name, out FileDescriptorHandle? received)
        => ExchangeCore(channel, payload, request, body, default, name, out received);

    // Sends a request and reads its answer; the answer's first descriptor is the caller's, any others are closed.
    private static ReadOnlySpan<byte> ExchangeCore(VhostUserChannel channel, byte[] payload, VhostUserRequest request, ReadOnlySpan<byte> body, ReadOnlySpan<int> fds, string name, out FileDescriptorHandle? received)
    {
        if (!channel.Send(request, 0x1, body, fds))
        {
            throw new IOException($"The back-end closed the connection before {name}.");
        }

        Span<int> numbers = stackalloc int[VhostUserChannel.MaxFds];
        var error = channel.Receive(payload, numbers, reply: true, out var header, out int count);
        received = KeepFirst(numbers[..count]);
        if (error != VhostUserError.None)
        {
            throw new IOException($"No valid answer to {name} from the back-end ({error}).");
        }

        if (header.Request != request)
        {
            received?.Dispose();
            received = null;
            throw new IOException($"The back-end answered {name} with request {(uint)header.Request}.");
        }

        return payload.AsSpan(0, (int)header.Size);
    }

    // Takes ownership of received descriptors: the first is returned, the rest are closed.
    private static FileDescriptorHandle? KeepFirst(ReadOnlySpan<int> fds)
    {
        for (int i = 1; i < fds.Length; i++)
        {
            new FileDescriptorHandle(fds[i]).Dispose();
        }

        return fds.Length > 0 ? new FileDescriptorHandle(fds[0]) : null;
    }

    // A message with no reply of its own: with REPLY_ACK, wait for the back-end's verdict.
    private static void Send(VhostUserChannel channel, byte[] payload, VhostUserRequest request, ReadOnlySpan<byte> body, ReadOnlySpan<int> fds, bool ack, string name)
    {
        if (!channel.Send(request, ack ? 0x9u : 0x1u, body, fds))
        {
            throw new IOException($"The back-end closed the connection before {name}.");
        }

        if (!ack)
        {
            return;
        }

        Span<int> none = stackalloc int[VhostUserChannel.MaxFds];
        var error = channel.Receive(payload, none, reply: true, out var header, out int count);
        KeepFirst(none[..count])?.Dispose();

        if (error != VhostUserError.None || header.Request != request || header.Size != 8)
        {
            throw new IOException($"No valid acknowledgement of {name} from the back-end ({error}).");
        }

        ulong verdict = BinaryPrimitives.ReadUInt64LittleEndian(payload);
        if (verdict != 0)
        {
            throw new IOException($"The back-end refused {name} (status {verdict}).");
        }
    }

    // Watches the connection; when the back-end goes away, reconnects and restarts the rings where they were.
    private void Monitor()
    {
        byte* one = stackalloc byte[1];
        while (!_closing)
        {
            long n = LibC.recv(_channel.Fd, one, 1, 0);
            if (n < 0 && LibC.errno == Errno.EINTR)
            {
                continue;
            }

            if (_closing)
            {
                return;
            }

            if (n > 0)
            {
                VhostClientLog.UnrequestedMessage(_logger, Name);
                continue;
            }

            VhostClientLog.BackEndGone(_logger, Name);
            if (!_options.Reconnect || !TryReconnect())
            {
                foreach (var q in _queues)
                {
                    q.Fail();
                }

                VhostClientLog.ReconnectFailed(_logger, Name);
                return;
            }
        }
    }

    private bool TryReconnect()
    {
        var watch = Stopwatch.StartNew();
        while (!_closing && watch.Elapsed < _options.ConnectTimeout)
        {
            VhostUserChannel? channel = null;
            try
            {
                channel = new VhostUserChannel(ConnectSocket(_options.SocketPath, _options.ConnectTimeout - watch.Elapsed));
                ulong offered = Call(channel, _payload, VhostUserRequest.GetFeatures, default, "GET_FEATURES");
                if ((offered & _rings.Features) != _rings.Features)
                {
                    throw new IOException("the new back-end offers fewer features than were negotiated");
                }

                var protocolOffered = (VhostUserProtocolFeatures)Call(channel, _payload, VhostUserRequest.GetProtocolFeatures, default, "GET_PROTOCOL_FEATURES");
                if ((protocolOffered & _rings.Protocol) != _rings.Protocol)
                {
                    throw new IOException("the new back-end offers fewer protocol features than were negotiated");
                }

                Span<byte> u64 = stackalloc byte[8];
                BinaryPrimitives.WriteUInt64LittleEndian(u64, (ulong)_rings.Protocol);
                Send(channel, _payload, VhostUserRequest.SetProtocolFeatures, u64, default, _rings.ReplyAck, "SET_PROTOCOL_FEATURES");
                Send(channel, _payload, VhostUserRequest.SetOwner, default, default, _rings.ReplyAck, "SET_OWNER");
                StartRings(channel, _payload, _rings);
                var old = _channel;
                _channel = channel;
                old.Dispose();
                Interlocked.Increment(ref _reconnects);
                VhostClientLog.Reconnected(_logger, Name, watch.Elapsed.TotalSeconds);
                return true;
            }
            catch (IOException e)
            {
                channel?.Dispose();
                VhostClientLog.ReconnectAttemptFailed(_logger, Name, e.Message);
                Thread.Sleep(100);
            }
        }

        return false;
    }

    internal void Release(ClientVirtqueue vq)
    {
        lock (_lock)
        {
            vq.InUse = false;
        }
    }

    private sealed class Setup
    {
        public required VhostUserBlkClientOptions Options;
        public required ILogger Logger;
        public required VhostUserChannel Channel;
        public byte[] Payload = new byte[VhostUserHeader.MaxPayload];
        public ClientRingSetup Rings = new();
        public bool Owned = true;

        public void Release()
        {
            if (!Owned)
            {
                return;
            }

            Channel.Dispose();
            Rings.Dispose();
        }
    }
}
