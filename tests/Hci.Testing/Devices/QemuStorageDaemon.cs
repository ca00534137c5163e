using System.Diagnostics;

namespace Hci.Testing;

/// <summary>Starts qemu-storage-daemon exporting a raw file as vhost-user-blk.</summary>
public static class QemuStorageDaemon
{
    /// <summary>Starts the daemon on a fresh raw image in <paramref name="dir"/> and waits for its socket.</summary>
    /// <param name="dir">A directory of the test's own, for the image.</param>
    /// <param name="socket">Where the export listens.</param>
    /// <param name="size">The image's size in bytes.</param>
    /// <param name="queues">Virtqueues the export offers.</param>
    /// <returns>The running daemon; the caller kills it.</returns>
    /// <exception cref="InvalidOperationException">The daemon is not installed, or did not start within 10 s.</exception>
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
