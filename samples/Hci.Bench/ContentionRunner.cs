using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Hci.Core.Blocks;
using Hci.Core.Buffers;
using Hci.Core.Devices;
using Hci.Scheduling;

namespace Hci.Bench;

/// <summary>
/// The paper's Fig. 6, live: a container-class load and a VM-class load on one device through one scheduler,
/// each alone and then together. Both loads run on one thread and one scheduled queue (as they would share one
/// reactor); the VM's virtualization cost is a delay before its I/O reaches the controller and after it completes.
/// </summary>
internal static class ContentionRunner
{
    public static int Run(ContentionOptions options, TextWriter output, TextWriter log)
    {
        string? temp = null;
        if (options.FileName == null)
        {
            temp = Path.Combine(Directory.Exists("/var/tmp") ? "/var/tmp" : Path.GetTempPath(), $"hci-contention-{Environment.ProcessId}.img");
            options.FileName = temp;
        }

        try
        {
            bool existed = File.Exists(options.FileName);
            long existing = existed ? new FileInfo(options.FileName).Length : 0;
            using var inner = BlockDevices.Open(new BlockDeviceOptions { Engine = BlockEngine.IoUring, Path = options.FileName, Size = options.Size });
            if (!options.FileName.StartsWith("/dev/", StringComparison.Ordinal) && existing < inner.Geometry.Capacity)
            {
                BenchRunner.LayOut(inner, new BenchOptions { FileName = options.FileName, Json = options.Json }, existing, log);
            }

            var schedulerOptions = new SchedulerOptions { Kind = options.Scheduler };
            schedulerOptions.Hybrid.ContainerLatencyTolerance = options.LatencyTolerance ?? schedulerOptions.Hybrid.ContainerLatencyTolerance;
            schedulerOptions.Hybrid.ContainerPressureDepth = options.PressureDepth ?? schedulerOptions.Hybrid.ContainerPressureDepth;
            using var device = new ScheduledBlockDevice(inner, schedulerOptions, ownsInner: false);
            if (!options.Sweep)
            {
                var result = RunDepth(device, options, options.IoDepth, log);
                output.WriteLine(options.Json ? result.ToJson(options) : result.ToText(options));
                return 0;
            }

            var rows = new List<ContentionResult>();
            for (int qd = 1; qd <= 128; qd *= 2)
            {
                rows.Add(RunDepth(device, options, qd, log));
            }

            string csv = options.CsvPath ?? $"contention-{options.Scheduler.ToString().ToLowerInvariant()}.csv";
            File.WriteAllText(csv, ContentionResult.ToCsv(rows));
            if (options.Json)
            {
                output.WriteLine("[" + string.Join(",", rows.Select(r => r.ToJson(options))) + "]");
            }
            else
            {
                output.Write(ContentionResult.ToTable(rows, options));
                output.WriteLine($"CSV written to {csv}");
            }

            return 0;
        }
        finally
        {
            if (temp != null)
            {
                File.Delete(temp);
            }
        }
    }

    private static ContentionResult RunDepth(BlockDevice device, ContentionOptions options, int depth, TextWriter log)
    {
        if (!options.Json)
        {
            log.WriteLine($"hci-bench contention: scheduler={options.Scheduler.ToString().ToLowerInvariant()} iodepth={depth}: container alone, VM alone, together ({options.RuntimeSeconds:g} s each, {options.Rounds} round(s))");
        }

        // Rounds alternate the three phases, so that drift in the machine's speed hits all of them; medians are reported.
        var soloContainers = new List<LoadStats>();
        var soloVms = new List<LoadStats>();
        var containers = new List<LoadStats>();
        var vms = new List<LoadStats>();
        for (int round = 0; round < options.Rounds; round++)
        {
            soloContainers.Add(RunPhase(device, options, depth, container: true, vm: false).Container);
            soloVms.Add(RunPhase(device, options, depth, container: false, vm: true).Vm);
            var together = RunPhase(device, options, depth, container: true, vm: true);
            containers.Add(together.Container);
            vms.Add(together.Vm);
        }

        return new ContentionResult(depth, Median(soloContainers), Median(soloVms), Median(containers), Median(vms));
    }

    private static LoadStats Median(List<LoadStats> runs)
    {
        static double Mid(IEnumerable<double> values)
        {
            var sorted = values.Order().ToArray();
            return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[(sorted.Length / 2) - 1] + sorted[sorted.Length / 2]) / 2;
        }

        return new LoadStats(Mid(runs.Select(r => r.Iops)), Mid(runs.Select(r => r.MeanNs)), (long)Mid(runs.Select(r => (double)r.P99Ns)));
    }

    private static (LoadStats Container, LoadStats Vm) RunPhase(BlockDevice device, ContentionOptions options, int depth, bool container, bool vm)
    {
        (LoadStats, LoadStats) result = default;
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                result = new Phase(device, options, depth, container, vm).Run();
            }
            catch (Exception ex)
            {
                failure = ex;
            }
        })
        { Name = "hci-bench contention", IsBackground = true };
        thread.Start();
        thread.Join();
        if (failure != null)
        {
            throw new IOException($"contention phase failed: {failure.Message}", failure);
        }

        return result;
    }

    private sealed unsafe class Phase : IBlockCompletionHandler
    {
        private readonly BlockDevice _device;
        private readonly ContentionOptions _options;
        private readonly int _depth;
        private readonly bool _container;
        private readonly bool _vm;
        private readonly long _overheadTicks;
        private readonly long _blocks;
        private readonly Queue<(BlockRequest Request, long Due)> _vmArrivals;
        private readonly Queue<(BlockRequest Request, long Due)> _vmCompletions;
        private readonly LatencyHistogram _containerLat = new();
        private readonly LatencyHistogram _vmLat = new();
        private BlockQueue _queue = null!;
        private ulong _rng = 0x9E3779B97F4A7C15UL;
        private long _measureFrom;
        private long _stopAt;
        private bool _stopping;
        private long _errors;

        public Phase(BlockDevice device, ContentionOptions options, int depth, bool container, bool vm)
        {
            _device = device;
            _options = options;
            _depth = depth;
            _container = container;
            _vm = vm;
            _overheadTicks = (long)(options.VmOverheadUs * Stopwatch.Frequency / 1e6);
            _blocks = device.Geometry.Capacity / options.BlockSize;
            _vmArrivals = new Queue<(BlockRequest, long)>(depth);
            _vmCompletions = new Queue<(BlockRequest, long)>(depth);
        }

        public (LoadStats Container, LoadStats Vm) Run()
        {
            int total = (_container ? _depth : 0) + (_vm ? _depth : 0);
            _queue = _device.CreateQueue(total);
            using var pool = new AlignedBufferPool((_options.BlockSize + 4095) & ~4095, total);
            _queue.TryRegisterBuffers([pool.Slab]);
            var requests = new List<BlockRequest>();
            long start = Stopwatch.GetTimestamp();
            _measureFrom = start + (long)(Math.Min(1.0, _options.RuntimeSeconds / 5) * Stopwatch.Frequency);
            _stopAt = _measureFrom + (long)(_options.RuntimeSeconds * Stopwatch.Frequency);
            for (int i = 0; i < total; i++)
            {
                bool isVm = !_container || (_vm && i >= _depth);
                var r = new BlockRequest { Handler = this, UserState = pool.Rent(), Class = isVm ? IoClass.Vm : IoClass.Container, Tenant = isVm ? 2 : 1 };
                requests.Add(r);
                if (isVm)
                {
                    r.UserTag = start;
                    _vmArrivals.Enqueue((r, start + _overheadTicks));
                }
                else
                {
                    Issue(r, start);
                }
            }

            while (true)
            {
                long now = Stopwatch.GetTimestamp();
                if (now >= _stopAt)
                {
                    _stopping = true;
                }

                while (_vmArrivals.Count > 0 && _vmArrivals.Peek().Due <= now)
                {
                    var (r, _) = _vmArrivals.Dequeue();
                    if (!_stopping)
                    {
                        Issue(r, r.UserTag);
                    }
                }

                while (_vmCompletions.Count > 0 && _vmCompletions.Peek().Due <= now)
                {
                    var (r, _) = _vmCompletions.Dequeue();
                    Record(_vmLat, r, now);
                    if (!_stopping)
                    {
                        r.UserTag = now;
                        _vmArrivals.Enqueue((r, now + _overheadTicks));
                    }
                }

                if (_stopping && _queue.InFlight == 0 && _vmCompletions.Count == 0)
                {
                    break;
                }

                _queue.Poll(0, 0);
            }

            _queue.Dispose();
            foreach (var r in requests)
            {
                r.Dispose();
            }

            if (_errors > 0)
            {
                throw new IOException($"{_errors} I/O error(s) during the phase");
            }

            double seconds = (_stopAt - _measureFrom) / (double)Stopwatch.Frequency;
            return (LoadStats.From(_containerLat, seconds), LoadStats.From(_vmLat, seconds));
        }

        public void OnCompleted(BlockRequest request)
        {
            long now = Stopwatch.GetTimestamp();
            if (!request.Succeeded)
            {
                _errors++;
                _stopping = true;
                return;
            }

            if (request.Class == IoClass.Vm)
            {
                // The completion reaches the guest only after the virtualization cost.
                _vmCompletions.Enqueue((request, now + _overheadTicks));
                return;
            }

            Record(_containerLat, request, now);
            if (!_stopping && now < _stopAt)
            {
                Issue(request, now);
            }
        }

        private void Record(LatencyHistogram histogram, BlockRequest request, long now)
        {
            if (now >= _measureFrom && now <= _stopAt)
            {
                histogram.Record((long)((now - request.UserTag) * 1e9 / Stopwatch.Frequency));
            }
        }

        private void Issue(BlockRequest request, long issuedAt)
        {
            ulong x = _rng;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            _rng = x;
            long block = (long)((x * 0x2545F4914F6CDD1DUL) % (ulong)_blocks);
            var buffer = (AlignedBuffer)request.UserState!;
            request.SetReadWrite(BlockOperation.Read, block * _options.BlockSize, buffer.Pointer, _options.BlockSize);
            request.UserTag = issuedAt;
            _queue.Submit(request);
        }
    }
}

/// <summary>IOPS and latency of one load in one phase.</summary>
internal readonly record struct LoadStats(double Iops, double MeanNs, long P99Ns)
{
    public static LoadStats From(LatencyHistogram h, double seconds) => new(h.Count / seconds, h.Mean, h.Percentile(99));
}

/// <summary>One iodepth's solo and together figures.</summary>
internal sealed record ContentionResult(int IoDepth, LoadStats SoloContainer, LoadStats SoloVm, LoadStats Container, LoadStats Vm)
{
    public string ToJson(ContentionOptions o)
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = !o.Sweep }))
        {
            w.WriteStartObject();
            w.WriteString("scheduler", o.Scheduler.ToString().ToLowerInvariant());
            w.WriteNumber("iodepth", IoDepth);
            w.WriteNumber("vm_overhead_us", o.VmOverheadUs);
            w.WriteStartObject("solo");
            Write(w, "container", SoloContainer);
            Write(w, "vm", SoloVm);
            w.WriteEndObject();
            w.WriteStartObject("together");
            Write(w, "container", Container);
            Write(w, "vm", Vm);
            w.WriteEndObject();
            w.WriteEndObject();
        }

        return Encoding.UTF8.GetString(stream.ToArray());
    }

    public string ToText(ContentionOptions o) => ToTable([this], o);

    public static string ToTable(IReadOnlyList<ContentionResult> rows, ContentionOptions o)
    {
        var sb = new StringBuilder();
        sb.AppendLine(CultureInfo.InvariantCulture, $"scheduler={o.Scheduler.ToString().ToLowerInvariant()}, vm overhead {o.VmOverheadUs:g} us each way, bs={o.BlockSize}, randread, {o.RuntimeSeconds:g} s per phase, median of {o.Rounds} round(s)");
        sb.AppendLine("   QD | container IOPS solo -> together (kept) | VM IOPS solo -> together | container lat us mean/p99 solo -> together | VM lat us mean/p99 solo -> together | total IOPS");
        foreach (var r in rows)
        {
            sb.AppendLine(CultureInfo.InvariantCulture,
                $"{r.IoDepth,5} | {r.SoloContainer.Iops,9:F0} -> {r.Container.Iops,9:F0} ({Kept(r.Container.Iops, r.SoloContainer.Iops)}) | {r.SoloVm.Iops,8:F0} -> {r.Vm.Iops,8:F0} | {r.SoloContainer.MeanNs / 1000,7:F0}/{r.SoloContainer.P99Ns / 1000,6} -> {r.Container.MeanNs / 1000,7:F0}/{r.Container.P99Ns / 1000,6} | {r.SoloVm.MeanNs / 1000,7:F0}/{r.SoloVm.P99Ns / 1000,6} -> {r.Vm.MeanNs / 1000,7:F0}/{r.Vm.P99Ns / 1000,6} | {r.Container.Iops + r.Vm.Iops,9:F0}");
        }

        return sb.ToString();
    }

    public static string ToCsv(IReadOnlyList<ContentionResult> rows)
    {
        var sb = new StringBuilder("iodepth,solo_container_iops,solo_container_mean_us,solo_container_p99_us,solo_vm_iops,solo_vm_mean_us,solo_vm_p99_us,container_iops,container_mean_us,container_p99_us,vm_iops,vm_mean_us,vm_p99_us\n");
        foreach (var r in rows)
        {
            sb.AppendLine(string.Join(",", new[] { r.IoDepth.ToString(CultureInfo.InvariantCulture) }.Concat(new[] { r.SoloContainer, r.SoloVm, r.Container, r.Vm }.SelectMany(s => new[]
            {
                s.Iops.ToString("F0", CultureInfo.InvariantCulture), (s.MeanNs / 1000).ToString("F1", CultureInfo.InvariantCulture), (s.P99Ns / 1000.0).ToString("F1", CultureInfo.InvariantCulture),
            }))));
        }

        return sb.ToString();
    }

    private static string Kept(double together, double solo) => solo <= 0 ? "-" : (together / solo).ToString("P0", CultureInfo.InvariantCulture);

    private static void Write(Utf8JsonWriter w, string name, LoadStats s)
    {
        w.WriteStartObject(name);
        w.WriteNumber("iops", Math.Round(s.Iops, 1));
        w.WriteStartObject("lat_ns");
        w.WriteNumber("mean", Math.Round(s.MeanNs, 1));
        w.WriteNumber("p99", s.P99Ns);
        w.WriteEndObject();
        w.WriteEndObject();
    }
}
