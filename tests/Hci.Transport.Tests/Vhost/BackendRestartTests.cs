using System.Diagnostics;
using Hci.Core.Blocks;
using Hci.Core.Buffers;
using Hci.Transport.Vhost;
using Xunit.Abstractions;
using static Hci.Testing.Deadline;

namespace Hci.Transport.Tests;

/// <summary>
/// The back-end is killed (SIGKILL) and restarted while the client keeps writing: the client reconnects, the new
/// back-end runs again what the old one left in flight (from the shared in-flight record), no request fails, and
/// every block reads back as last written.
/// </summary>
public sealed class BackendRestartTests(ITestOutputHelper output)
{
    // A host restart takes a process start and a JIT warm-up: longer than the kit's default wait on a loaded machine.
    private static readonly TimeSpan RestartDeadline = TimeSpan.FromSeconds(60);

    private readonly System.Collections.Concurrent.ConcurrentQueue<string> _hostLog = new();

    private const int Blocks = 2048;
    private const int Depth = 16;

    [Fact]
    public async Task KillingAndRestartingTheHostLosesNoWriteAndFailsNoRequest()
    {
        string dir = Directory.CreateTempSubdirectory("hci-restart-").FullName;
        string socket = Path.Combine(dir, "s.sock");
        string image = Path.Combine("/var/tmp", $"hci-restart-{Guid.NewGuid():N}.img");
        Process? host = null;
        try
        {
            host = StartHost(socket, image);
            using var client = VhostUserBlkClient.Connect(new VhostUserBlkClientOptions { SocketPath = socket, QueueCount = 1, ConnectTimeout = TimeSpan.FromSeconds(20) });
            int lbs = client.Geometry.LogicalBlockSize;
            var versions = new int[Blocks];
            long failures = 0;
            long completed = 0;
            using var stop = new CancellationTokenSource();
            var writer = new Thread(() => Write(client, lbs, versions, stop.Token, ref failures, ref completed)) { IsBackground = true };
            writer.Start();

            for (int round = 0; round < 3; round++)
            {
                long before = Interlocked.Read(ref completed);
                await WaitUntilAsync(() => Interlocked.Read(ref completed) > before + 200, "writes before the kill", RestartDeadline);
                host.Kill();
                await host.WaitForExitAsync();
                host.Dispose();
                host = StartHost(socket, image); // it replaces the dead host's socket; the client retries until it is there
                int reconnects = round + 1;
                await WaitUntilAsync(() => client.Reconnects >= reconnects, "the client to reconnect", RestartDeadline);
                long after = Interlocked.Read(ref completed);
                await WaitUntilAsync(() => Interlocked.Read(ref completed) > after + 200, "writes after the restart", RestartDeadline);
            }

            stop.Cancel();

            // Every request the writer submitted must be answered. A back-end that ignores the in-flight record
            // starts again at the used index and never runs the heads that were in flight when the old one died,
            // so their writes would wait forever: bound the wait instead of hanging.
            bool drained = writer.Join(TimeSpan.FromSeconds(60));
            foreach (string line in _hostLog)
            {
                output.WriteLine(line);
            }

            Assert.True(drained, "the writer's requests were never all answered after the restarts: in-flight requests were not resumed");
            Assert.Equal(0, Interlocked.Read(ref failures));
            Assert.Equal(3, client.Reconnects);

            // And the restarted back-ends did resume requests from the in-flight record: each restart logs how many
            // heads it resubmitted. The writer keeps 16 writes in flight, so a kill lands with some of them taken
            // and not answered; over three kills at least one restart must have resubmitted some.
            var resumed = _hostLog.Select(l => System.Text.RegularExpressions.Regex.Match(l, @"resumes (\d+) request\(s\) a previous back-end left in flight"))
                .Where(m => m.Success).Select(m => int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture)).ToList();
            Assert.True(resumed.Sum() > 0, $"no restarted back-end resubmitted an in-flight request (resume lines: {resumed.Count})");

            // Every block holds what was last acknowledged for it.
            using var buffer = new AlignedBuffer(lbs);
            for (int b = 0; b < Blocks; b++)
            {
                await client.ReadAsync((long)b * lbs, buffer.Memory);
                var (block, version) = Decode(buffer.Span);
                if (versions[b] == 0)
                {
                    continue;
                }

                Assert.True(block == b && version == versions[b], $"block {b}: holds block {block} version {version}, last acknowledged version {versions[b]}");
            }
        }
        finally
        {
            if (host is { HasExited: false })
            {
                host.Kill();
                await host.WaitForExitAsync();
            }

            host?.Dispose();
            Directory.Delete(dir, recursive: true);
            File.Delete(image);
        }
    }

    private static unsafe void Write(VhostUserBlkClient client, int lbs, int[] versions, CancellationToken stop, ref long failures, ref long completed)
    {
        using var queue = client.CreateQueue(Depth);
        using var pool = new AlignedBufferPool(lbs, Depth, alignment: Math.Min(lbs, 4096));
        var requests = new BlockRequest[Depth];
        var buffers = new AlignedBuffer[Depth];
        var inFlightBlock = new int[Depth];
        var busy = new bool[Blocks];
        var pending = new int[Depth];
        var rng = new Random(7);
        var handler = new CompletionRecorder();
        int version = 0;
        for (int i = 0; i < Depth; i++)
        {
            requests[i] = new BlockRequest { Handler = handler, UserTag = i };
            buffers[i] = pool.Rent();
            inFlightBlock[i] = -1;
        }

        void Start(int slot)
        {
            int block;
            do
            {
                block = rng.Next(Blocks);
            }
            while (busy[block]);
            busy[block] = true;
            inFlightBlock[slot] = block;
            pending[slot] = ++version;
            Encode(buffers[slot].Span, block, pending[slot]);
            var r = requests[slot];
            r.Reset();
            r.SetReadWrite(BlockOperation.Write, (long)block * lbs, buffers[slot].Pointer, lbs);
            queue.Submit(r);
        }

        for (int i = 0; i < Depth; i++)
        {
            Start(i);
        }

        while (queue.InFlight > 0)
        {
            queue.Poll(1, 100);
            while (handler.Done.TryDequeue(out var r))
            {
                int slot = (int)r.UserTag;
                int block = inFlightBlock[slot];
                if (r.Error != BlockError.None || r.Result < 0)
                {
                    Interlocked.Increment(ref failures);
                }
                else
                {
                    versions[block] = pending[slot];
                    Interlocked.Increment(ref completed);
                }

                busy[block] = false;
                if (!stop.IsCancellationRequested)
                {
                    Start(slot);
                }
            }
        }

        foreach (var r in requests)
        {
            r.Dispose();
        }

        foreach (var b in buffers)
        {
            pool.Return(b);
        }
    }

    private static void Encode(Span<byte> block, int index, int version)
    {
        for (int i = 0; i + 8 <= block.Length; i += 8)
        {
            BitConverter.TryWriteBytes(block[i..], index);
            BitConverter.TryWriteBytes(block[(i + 4)..], version);
        }
    }

    private static (int Block, int Version) Decode(ReadOnlySpan<byte> block)
    {
        int index = BitConverter.ToInt32(block);
        int version = BitConverter.ToInt32(block[4..]);
        for (int i = 0; i + 8 <= block.Length; i += 8)
        {
            if (BitConverter.ToInt32(block[i..]) != index || BitConverter.ToInt32(block[(i + 4)..]) != version)
            {
                return (-1, -1); // torn
            }
        }

        return (index, version);
    }

    private Process StartHost(string socket, string image)
    {
        string dll = HostTypeDll();
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (string a in new[] { dll, "--socket", socket, "--backing", image, "--size", "64m", "--queues", "1" })
        {
            psi.ArgumentList.Add(a);
        }

        var p = Process.Start(psi)!;
        p.ErrorDataReceived += (_, e) =>
        {
            if (e.Data != null)
            {
                _hostLog.Enqueue(e.Data);
            }
        };
        p.BeginErrorReadLine();
        p.BeginOutputReadLine();
        return p;
    }

    // The host as built beside this test (the test project references it, so it is built first).
    internal static string HostTypeDll()
    {
        string configuration = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)).Parent!.Name; // bin/<configuration>/net10.0
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Hci.sln")))
            {
                string dll = Path.Combine(dir.FullName, "samples", "Hci.Samples.HostType", "bin", configuration, "net10.0", "hci-hosttype.dll");
                Assert.True(File.Exists(dll), $"{dll} is missing: build Hci.Samples.HostType ({configuration})");
                return dll;
            }
        }

        throw new InvalidOperationException("The repository root (Hci.sln) is not above the test's directory.");
    }
}
