using System.Diagnostics;
using Hci.Core.Blocks;
using Hci.Core.Devices;
using Hci.Transport.Vhost;

// The contract suite (linked from Hci.Core.Tests) runs on the kinds below, in this namespace.
namespace Hci.Core.Tests;

public enum DeviceKind
{
    /// <summary>The Hci client against the Hci back-end over a memory device.</summary>
    VhostUserHci,

    /// <summary>The Hci client against qemu-storage-daemon's vhost-user-blk export of a raw file: an independent back-end.</summary>
    VhostUserQsd,
}

/// <summary>A vhost-user-blk client connected to a fresh back-end of each kind.</summary>
internal sealed class TestDevice : IAsyncDisposable
{
    public static readonly long DefaultSize = 16L << 20;

    private readonly VhostUserBlkServer? _server;
    private readonly BlockDevice? _backing;
    private readonly Process? _qsd;
    private readonly string _dir;

    private TestDevice(VhostUserBlkClient client, VhostUserBlkServer? server, BlockDevice? backing, Process? qsd, string dir)
    {
        Device = client;
        _server = server;
        _backing = backing;
        _qsd = qsd;
        _dir = dir;
    }

    public BlockDevice Device { get; }

    /// <summary>The Hci back-end's own device, where the test can look behind the front-end; null for qemu-storage-daemon.</summary>
    public BlockDevice? Backing => _backing;

    /// <summary>
    /// What the client reports for each back-end, written here: virtio-blk carries FLUSH, DISCARD and WRITE_ZEROES
    /// but no FUA and no "discard reads zeroes" promise, and the client does not claim persistence for a remote device.
    /// </summary>
    public static BlockDeviceCapabilities Promises(DeviceKind kind) => kind switch
    {
        DeviceKind.VhostUserHci or DeviceKind.VhostUserQsd => BlockDeviceCapabilities.Flush | BlockDeviceCapabilities.Discard | BlockDeviceCapabilities.WriteZeroes,
        _ => throw new ArgumentOutOfRangeException(nameof(kind)),
    };

    public static bool IsPersistent(DeviceKind kind) => true;

    public static TestDevice Create(DeviceKind kind, long size = 0)
    {
        size = size == 0 ? DefaultSize : size;
        string dir = Directory.CreateTempSubdirectory("hci-vhost-").FullName;
        string socket = Path.Combine(dir, "s.sock");
        var options = new VhostUserBlkClientOptions { SocketPath = socket, QueueSize = 64 };
        if (kind == DeviceKind.VhostUserHci)
        {
            var backing = new MemoryBlockDevice(size);
            var server = new VhostUserBlkServer(backing, new VhostUserBlkServerOptions { SocketPath = socket, MaxQueues = 8, ReactorThreads = 1 });
            server.Start();
            return new TestDevice(VhostUserBlkClient.Connect(options), server, backing, null, dir);
        }

        var qsd = QemuStorageDaemon.Start(dir, socket, size);
        try
        {
            return new TestDevice(VhostUserBlkClient.Connect(options), null, null, qsd, dir);
        }
        catch
        {
            qsd.Kill();
            qsd.Dispose();
            throw;
        }
    }

    public async ValueTask DisposeAsync()
    {
        await Device.DisposeAsync();
        _server?.Dispose();
        _backing?.Dispose();
        if (_qsd != null)
        {
            _qsd.Kill();
            await _qsd.WaitForExitAsync();
            _qsd.Dispose();
        }

        Directory.Delete(_dir, recursive: true);
    }
}

/// <summary>Starts qemu-storage-daemon exporting a raw file as vhost-user-blk.</summary>
internal static class QemuStorageDaemon
{
    public static Process Start(string dir, string socket, long size, int queues = 8)
    {
        string image = Path.Combine(dir, "disk.raw");
        using (var f = File.Create(image))
        {
            f.SetLength(size);
        }

        var psi = new ProcessStartInfo("qemu-storage-daemon")
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        };
        psi.ArgumentList.Add("--blockdev");
        psi.ArgumentList.Add($"driver=file,node-name=disk0,filename={image.Replace(",", ",,")}");
        psi.ArgumentList.Add("--export");
        psi.ArgumentList.Add($"type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path={socket.Replace(",", ",,")},writable=on,num-queues={queues}");
        Process process;
        try
        {
            process = Process.Start(psi)!;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new InvalidOperationException("qemu-storage-daemon is not installed (Debian: qemu-system-common); .ci/run installs it.", e);
        }

        var watch = Stopwatch.StartNew();
        while (!File.Exists(socket))
        {
            if (process.HasExited || watch.Elapsed > TimeSpan.FromSeconds(10))
            {
                string err = process.HasExited ? process.StandardError.ReadToEnd() : "timed out";
                process.Kill();
                throw new InvalidOperationException($"qemu-storage-daemon did not start: {err}");
            }

            Thread.Sleep(20);
        }

        return process;
    }
}
