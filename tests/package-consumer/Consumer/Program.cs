// An integrator's first program against Hci's packages: open a file device with default options, serve it over
// vhost-user-blk, connect a client, and write and read back through the client with plain byte arrays.
// Usage: Consumer DIRECTORY (a directory on a file system that takes O_DIRECT; tmpfs does not). Prints OK.
using Hci.Cluster;
using Hci.Core.Devices;
using Hci.Scheduling;
using Hci.Transport.Vhost;

if (args.Length != 1 || !Directory.Exists(args[0]))
{
    Console.Error.WriteLine("usage: Consumer DIRECTORY (an existing directory that takes O_DIRECT)");
    return 2;
}

string image = Path.Combine(args[0], "disk.img");
string socket = Path.Combine(args[0], "vhost.sock");

// Every package loads: the cluster package's options check themselves.
new EtcdClusterStoreOptions { Endpoints = { "http://127.0.0.1:2379" } }.Validate();

// The device with default options (O_DIRECT), under the FIFO scheduler.
var file = BlockDevices.Open(new BlockDeviceOptions { Path = image, Size = 16 << 20 });
await using var device = new ScheduledBlockDevice(file, new SchedulerOptions { Kind = SchedulerKind.Fifo });
Console.WriteLine($"device: {file.Engine}, {device.Geometry.Capacity} bytes, buffers aligned to {device.Geometry.BufferAlignment}");

// The newcomer's call from issue 13: a plain byte array at 4096.
var first = Pattern(4096, 1);
await device.WriteAsync(4096, first);
var check = new byte[4096];
await device.ReadAsync(4096, check);
Verify(first, check, "the device itself");

using var server = new VhostUserBlkServer(device, new VhostUserBlkServerOptions { SocketPath = socket });
server.Start();
await using (var client = VhostUserBlkClient.Connect(new VhostUserBlkClientOptions { SocketPath = socket }))
{
    // Through the client: what the device wrote, then new data over several transfers.
    var back = new byte[4096];
    await client.ReadAsync(4096, back);
    Verify(first, back, "the client reading the device's write");

    var data = Pattern(512 << 10, 2);
    await client.WriteAsync(1 << 20, data);
    var read = new byte[data.Length];
    await client.ReadAsync(1 << 20, read);
    Verify(data, read, "the client");
    await client.FlushAsync();
}

// And on the device behind the server.
var behind = new byte[512 << 10];
await device.ReadAsync(1 << 20, behind);
Verify(Pattern(512 << 10, 2), behind, "the device behind the server");

Console.WriteLine("OK");
return 0;

static byte[] Pattern(int length, int seed)
{
    var bytes = new byte[length];
    new Random(seed).NextBytes(bytes);
    return bytes;
}

static void Verify(byte[] expected, byte[] actual, string what)
{
    int at = expected.AsSpan().CommonPrefixLength(actual);
    if (at != expected.Length || actual.Length != expected.Length)
    {
        throw new InvalidOperationException($"{what}: data differs at byte {at}");
    }
}
