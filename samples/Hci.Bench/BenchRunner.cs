using System.Diagnostics;
using Hci.Core.Blocks;
using Hci.Core.Buffers;
using Hci.Core.Devices;
using Hci.Transport.Vhost;

namespace Hci.Bench;

/// <summary>Runs one hci-bench invocation: opens the device, lays the file out, runs the jobs and reports.</summary>
internal static class BenchRunner
{
    // A vhost-user-blk back-end (Hci's, qemu-storage-daemon, SPDK) through the Hci client: one virtqueue per job.
    private static BlockDevice ConnectVhostUser(BenchOptions options) => VhostUserBlkClient.Connect(new VhostUserBlkClientOptions
    {
        SocketPath = options.FileName!,
        QueueCount = options.NumJobs,
        QueueSize = (int)Math.Clamp(System.Numerics.BitOperations.RoundUpToPowerOf2((uint)options.IoDepth), 2u, 1024u),
        MaxTransferBytes = Math.Max(128 * 1024, (options.BlockSize + 4095) / 4096 * 4096),
        Polling = options.Polling,
    });

    public static int Run(BenchOptions options, TextWriter output, TextWriter log)
    {
        bool existed = options.FileName != null && File.Exists(options.FileName);
        long existingSize = existed ? new FileInfo(options.FileName!).Length : 0;
        using var device = options.VhostUser ? ConnectVhostUser(options) : BlockDevices.Open(new BlockDeviceOptions
        {
            Engine = options.Engine,
            Path = options.FileName,
            Size = options.Size == 0 ? null : options.Size,
            Direct = options.Direct,
            LogicalBlockSize = Math.Min(4096, options.BlockSize & -options.BlockSize),
            MaxTransferBytes = Math.Max(1 << 20, options.BlockSize),
        });

        if (options.BlockSize % device.Geometry.LogicalBlockSize != 0)
        {
            throw new ArgumentException($"--bs={options.BlockSize} is not a multiple of the device's {device.Geometry.LogicalBlockSize}-byte blocks");
        }

        if (options.FileName != null && device.Engine is "io_uring" or "file" && (!existed || existingSize < device.Geometry.Capacity) && !IsBlockDevice(options.FileName))
        {
            LayOut(device, options, existingSize, log);
        }

        var jobs = Enumerable.Range(0, options.NumJobs).Select(i => new Job(options, device, i)).ToArray();
        try
        {
            return RunJobs(options, device, jobs, output, log);
        }
        finally
        {
            foreach (var job in jobs)
            {
                job.Close();
            }
        }
    }

    private static int RunJobs(BenchOptions options, BlockDevice device, Job[] jobs, TextWriter output, TextWriter log)
    {
        // Like fio, SIGINT or SIGTERM ends the run early and still reports it (and --verify's result).
        using var sigint = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGINT, Interrupt);
        using var sigterm = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGTERM, Interrupt);
        Task.WhenAll(jobs.Select(j => j.PrepareAsync(long.MaxValue, long.MaxValue))).GetAwaiter().GetResult();
        long start = Stopwatch.GetTimestamp();
        long measureFrom = start + (long)(options.RampSeconds * Stopwatch.Frequency);
        long stopAt = options.RuntimeSeconds > 0 ? measureFrom + (long)(options.RuntimeSeconds * Stopwatch.Frequency) : long.MaxValue;
        foreach (var job in jobs)
        {
            job.SetWindow(measureFrom, stopAt);
        }

        // The window is set before the first I/O: a short size-based job may be over before a later SetWindow.
        foreach (var job in jobs)
        {
            job.Go();
        }

        WaitUntil(measureFrom, jobs);
        var stagesStart = options.Breakdown ? Hci.Core.Blocks.RequestStages.Snapshot() : null; // before the allocation count
        long allocStart = GC.GetTotalAllocatedBytes(precise: true);
        var cpuStart = Environment.CpuUsage;
        long windowStart = Stopwatch.GetTimestamp();
        WaitUntil(stopAt, jobs);
        long windowEnd = Math.Min(Stopwatch.GetTimestamp(), stopAt);
        var cpuEnd = Environment.CpuUsage;
        long allocEnd = GC.GetTotalAllocatedBytes(precise: true);
        var stagesEnd = options.Breakdown ? Hci.Core.Blocks.RequestStages.Snapshot() : null;
        foreach (var job in jobs)
        {
            job.Stop();
        }

        Task.WhenAll(jobs.Select(j => j.Finished)).GetAwaiter().GetResult();

        var reads = new LatencyHistogram();
        var writes = new LatencyHistogram();
        foreach (var job in jobs)
        {
            reads.Add(job.Reads);
            writes.Add(job.Writes);
        }

        if (s_interrupted)
        {
            log.WriteLine($"hci-bench: interrupted by a signal after {(windowEnd - start) / (double)Stopwatch.Frequency:F1} s; reporting what ran");
        }

        long ios = reads.Count + writes.Count;
        var result = new BenchResult
        {
            Options = options,
            Engine = device.Engine,
            Reads = reads,
            Writes = writes,
            Seconds = Math.Max(1e-9, (windowEnd - windowStart) / (double)Stopwatch.Frequency),
            AllocBytesPerIo = ios == 0 ? 0 : (allocEnd - allocStart) / (double)ios,
            CpuNsPerIo = ios == 0 ? 0 : (cpuEnd.TotalTime - cpuStart.TotalTime).TotalNanoseconds / ios,
            UserCpu = cpuEnd.UserTime - cpuStart.UserTime,
            SystemCpu = cpuEnd.PrivilegedTime - cpuStart.PrivilegedTime,
            Errors = jobs.Sum(j => j.Errors),
            FirstError = jobs.Select(j => j.FirstError).FirstOrDefault(e => e != null),
        };

        if (options.Json)
        {
            output.WriteLine(result.ToJson());
        }
        else
        {
            output.Write(result.ToText());
        }

        if (stagesStart != null && stagesEnd != null)
        {
            log.WriteLine("hci-bench: time per stage over the measured window (this process's view; with vhost-user the back-end is the device):");
            foreach (string line in stagesEnd.Since(stagesStart).Format("  "))
            {
                log.WriteLine(line);
            }
        }

        if (options.Verify)
        {
            log.WriteLine($"hci-bench: verify: {jobs.Sum(j => j.Verified)} reads checked against this run's writes, {(result.Errors > 0 ? "FAILED" : "all good")}");
        }

        if (result.Errors > 0)
        {
            log.WriteLine($"hci-bench: {result.Errors} I/O error(s); first: {result.FirstError}");
            return 1;
        }

        return 0;
    }

    private static volatile bool s_interrupted;

    private static void Interrupt(System.Runtime.InteropServices.PosixSignalContext context)
    {
        context.Cancel = true;
        s_interrupted = true;
    }

    private static void WaitUntil(long timestamp, Job[] jobs)
    {
        while (true)
        {
            if (s_interrupted || jobs.All(j => j.Done))
            {
                return;
            }

            long now = Stopwatch.GetTimestamp();
            if (now >= timestamp)
            {
                return;
            }

            double ms = (timestamp - now) * 1000.0 / Stopwatch.Frequency;
            Thread.Sleep((int)Math.Clamp(ms, 1, 100));
        }
    }

    private static bool IsBlockDevice(string path) => path.StartsWith("/dev/", StringComparison.Ordinal);

    internal static unsafe void LayOut(BlockDevice device, BenchOptions options, long from, TextWriter log)
    {
        // Like fio, write the file out before measuring, so that reads hit the device rather than holes.
        const int chunk = 1 << 20;
        long capacity = device.Geometry.Capacity;
        from -= from % chunk;
        if (!options.Json)
        {
            log.Write($"hci-bench: laying out {options.FileName} ({capacity >> 20} MiB)");
        }

        using var queue = device.CreateQueue(4);
        using var pool = new AlignedBufferPool(chunk, 4);
        var handler = new LayoutHandler();
        var requests = Enumerable.Range(0, 4).Select(_ => new BlockRequest { Handler = handler, UserState = pool.Rent() }).ToArray();
        foreach (var r in requests)
        {
            Random.Shared.NextBytes(((AlignedBuffer)r.UserState!).Span);
        }

        long offset = from;
        int lastPercent = -1;
        while (offset < capacity || queue.InFlight > 0)
        {
            while (offset < capacity && queue.InFlight < requests.Length)
            {
                var r = Array.Find(requests, x => !x.IsInFlight)!;
                int length = (int)Math.Min(chunk, capacity - offset);
                r.SetReadWrite(BlockOperation.Write, offset, ((AlignedBuffer)r.UserState!).Pointer, length);
                queue.Submit(r);
                offset += length;
            }

            queue.Poll(1);
            if (handler.Error != null)
            {
                throw new IOException($"laying out {options.FileName} failed: {handler.Error}");
            }

            int percent = (int)(offset * 100 / capacity);
            if (!options.Json && percent / 10 != lastPercent / 10)
            {
                log.Write($" {percent}%");
                lastPercent = percent;
            }
        }

        requests[0].SetRange(BlockOperation.Flush, 0, 0);
        queue.Submit(requests[0]);
        while (queue.InFlight > 0)
        {
            queue.Poll(1);
        }

        if (!options.Json)
        {
            log.WriteLine(" done");
        }

        foreach (var r in requests)
        {
            r.Dispose();
        }
    }
}

/// <summary>Notes the first failure while the file is laid out.</summary>
internal sealed class LayoutHandler : IBlockCompletionHandler
{
    public string? Error { get; private set; }

    public void OnCompleted(BlockRequest request)
    {
        if (!request.Succeeded)
        {
            Error ??= request.ToException("layout")?.Message;
        }
    }
}
