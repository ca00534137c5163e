using System.Collections.Concurrent;
using Hci.Core.Blocks;
using Hci.Core.Buffers;
using Hci.Core.Devices;
using Hci.Core.Modules;
using Hci.Core.Reactors;
using Hci.Transport.Vhost;
using Tmds.Linux;

namespace Hci.Transport.Tests;

/// <summary>What the hybrid host relies on: a socket decides the class of its requests, each connection is a tenant,
/// servers on shared reactors share one queue (one scheduler), and a socket admits only the peers it lists.</summary>
public sealed class VhostClassAndPeerTests : IDisposable
{
    private const int Block = 4096;
    private readonly string _dir = Directory.CreateTempSubdirectory("hci-vhost-class-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task RequestsTakeTheClassOfTheirSocketAndATenantPerConnectionThroughOneSharedQueue()
    {
        using var memory = new MemoryBlockDevice(16 << 20);
        using var device = new ClassRecordingDevice(memory);
        using var reactors = new ReactorGroup(new ReactorGroupOptions { Count = 1, Name = "hci-test-shared" });
        string vmSocket = Path.Combine(_dir, "vm.sock");
        string containerSocket = Path.Combine(_dir, "ct.sock");
        using var vm = new VhostUserBlkServer(device, new VhostUserBlkServerOptions { SocketPath = vmSocket, MaxQueues = 1, Reactors = reactors, TenantPerConnection = true });
        using var container = new VhostUserBlkServer(device, new VhostUserBlkServerOptions { SocketPath = containerSocket, MaxQueues = 1, Reactors = reactors, Class = IoClass.Container, TenantPerConnection = true });
        vm.Start();
        container.Start();
        var stagesBefore = RequestStages.Snapshot();

        await using (var vm1 = VhostUserBlkClient.Connect(new VhostUserBlkClientOptions { SocketPath = vmSocket }))
        await using (var vm2 = VhostUserBlkClient.Connect(new VhostUserBlkClientOptions { SocketPath = vmSocket }))
        await using (var ct = VhostUserBlkClient.Connect(new VhostUserBlkClientOptions { SocketPath = containerSocket }))
        {
            using var buffer = new AlignedBuffer(Block);
            for (int i = 0; i < 8; i++)
            {
                await vm1.WriteAsync((0L << 20) + (i * Block), buffer.Memory);
                await vm2.WriteAsync((1L << 20) + (i * Block), buffer.Memory);
                await ct.WriteAsync((2L << 20) + (i * Block), buffer.Memory);
            }
        }

        var seen = device.Seen.Where(s => s.Operation == BlockOperation.Write).ToList();
        Assert.Equal(24, seen.Count);
        var bySource = seen.GroupBy(s => s.Offset >> 20).ToDictionary(g => g.Key, g => g.ToList());
        Assert.All(bySource[0], s => Assert.Equal(IoClass.Vm, s.Class));
        Assert.All(bySource[1], s => Assert.Equal(IoClass.Vm, s.Class));
        Assert.All(bySource[2], s => Assert.Equal(IoClass.Container, s.Class));
        int[] tenants = [.. bySource.Keys.Order().Select(k => Assert.Single(bySource[k].Select(s => s.Tenant).Distinct()))];
        Assert.Equal(3, tenants.Distinct().Count()); // a tenant per connection, not per socket
        Assert.Single(seen.Select(s => s.Queue).Distinct()); // one reactor, one device: one queue, one scheduler

        // The back-end traced each request through its stages, under the socket's class (other tests may add more).
        var stages = RequestStages.Snapshot().Since(stagesBefore);
        foreach (var (cls, n) in new[] { (IoClass.Vm, 16), (IoClass.Container, 8) })
        {
            Assert.True(stages.Requests(cls) >= n, $"{cls}: {stages.Requests(cls)} traced");
            Assert.True(stages[cls, RequestStage.FrontEnd].Count >= n, $"{cls}: front-end {stages[cls, RequestStage.FrontEnd].Count}");
            Assert.True(stages[cls, RequestStage.Device].Count >= n, $"{cls}: device {stages[cls, RequestStage.Device].Count}");
            Assert.True(stages[cls, RequestStage.Completion].Count >= n, $"{cls}: completion {stages[cls, RequestStage.Completion].Count}");
        }
    }

    [Fact]
    public async Task APeerOutsideTheAllowedUsersAndGroupsIsRefusedAtConnect()
    {
        uint uid = LibC.getuid();
        uint gid = LibC.getgid();
        using var device = new MemoryBlockDevice(16 << 20);
        string refusing = Path.Combine(_dir, "refusing.sock");
        using var closed = new VhostUserBlkServer(device, new VhostUserBlkServerOptions
        {
            SocketPath = refusing,
            MaxQueues = 1,
            ReactorThreads = 1,
            Class = IoClass.Container,
            AllowedUsers = [uid + 1],
            AllowedGroups = [gid + 1],
        });
        closed.Start();
        Assert.ThrowsAny<Exception>(() => VhostUserBlkClient.Connect(new VhostUserBlkClientOptions { SocketPath = refusing, ConnectTimeout = TimeSpan.FromSeconds(5) }));
        Assert.Equal(0, closed.Connections);
        Assert.Equal(0, closed.Requests);

        foreach (var (users, groups) in new[] { (new[] { uid + 1, uid }, Array.Empty<uint>()), (Array.Empty<uint>(), new[] { gid }) })
        {
            string path = Path.Combine(_dir, $"open-{users.Length}.sock");
            using var open = new VhostUserBlkServer(device, new VhostUserBlkServerOptions { SocketPath = path, MaxQueues = 1, ReactorThreads = 1, Class = IoClass.Container, AllowedUsers = users, AllowedGroups = groups });
            open.Start();
            await using var client = VhostUserBlkClient.Connect(new VhostUserBlkClientOptions { SocketPath = path });
            using var buffer = new AlignedBuffer(Block);
            await client.WriteAsync(0, buffer.Memory);
            Assert.Equal(1, open.Requests);
        }
    }

    [Fact]
    public void ABackgroundClassOnAFrontEndSocketIsRefusedWithAMessageThatNamesTheSetting()
    {
        using var device = new MemoryBlockDevice(1 << 20);
        var e = Assert.Throws<ArgumentException>(() => new VhostUserBlkServer(device, new VhostUserBlkServerOptions { SocketPath = Path.Combine(_dir, "x.sock"), Class = IoClass.Background }));
        Assert.Contains("Class", e.Message, StringComparison.Ordinal);
    }

    /// <summary>Records each request's class, tenant and the queue it came through.</summary>
    private sealed class ClassRecordingDevice(BlockDevice inner) : BlockDeviceDecorator(inner, ownsInner: false)
    {
        public ConcurrentQueue<(BlockOperation Operation, long Offset, IoClass Class, int Tenant, object Queue)> Seen { get; } = new();

        protected override BlockQueue CreateQueueCore(int depth) => new Queue(this, depth);

        private sealed class Queue(ClassRecordingDevice device, int depth) : DecoratorQueue(device, device.Inner, depth)
        {
            protected override void SubmitCore(BlockRequest request)
            {
                device.Seen.Enqueue((request.Operation, request.Offset, request.Class, request.Tenant, this));
                Forward(request);
            }

            protected override int PollCore(int minCompletions, int timeoutMilliseconds)
            {
                int before = InFlight;
                InnerQueue.Poll(minCompletions, timeoutMilliseconds);
                return before - InFlight;
            }
        }
    }
}
