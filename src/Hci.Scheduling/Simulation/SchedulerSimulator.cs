using Hci.Core.Blocks;

namespace Hci.Scheduling.Simulation;

/// <summary>
/// A deterministic discrete-event simulation of tenants, a scheduler and a device on a virtual clock: proves a
/// scheduler's guarantees without timing noise, in milliseconds of real time for seconds of virtual time.
/// </summary>
internal static class SchedulerSimulator
{
    /// <summary>Runs the tenants against the scheduler and the device for <paramref name="duration"/> of virtual time.</summary>
    /// <param name="scheduler">The scheduler under test; fresh.</param>
    /// <param name="device">The device model.</param>
    /// <param name="tenants">The loads.</param>
    /// <param name="duration">Virtual time measured, after <paramref name="warmup"/>.</param>
    /// <param name="warmup">Virtual time run before measuring.</param>
    /// <returns>What each tenant got.</returns>
    public static SimulationResult Run(IoScheduler<SimulatedIo> scheduler, SimulatedDevice device, IReadOnlyList<SimulatedTenant> tenants, TimeSpan duration, TimeSpan warmup = default)
    {
        ArgumentNullException.ThrowIfNull(scheduler);
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(tenants);
        if (device.Channels < 1)
        {
            throw new ArgumentException("The device needs at least one channel.", nameof(device));
        }

        var sim = new Simulation(scheduler, device, tenants, (long)warmup.TotalNanoseconds, (long)(warmup + duration).TotalNanoseconds);
        return sim.Execute();
    }

    private sealed class Simulation
    {
        private readonly IoScheduler<SimulatedIo> _scheduler;
        private readonly SimulatedDevice _device;
        private readonly IReadOnlyList<SimulatedTenant> _tenants;
        private readonly long _measureFrom;
        private readonly long _end;
        private readonly PriorityQueue<(int Kind, SimulatedIo? Io, int Tenant), (long, long)> _events = new();
        private readonly Stats[] _stats;
        private readonly ulong[] _rng;
        private ulong _deviceRng = 0x2545F4914F6CDD1DUL;
        private long _seq;
        private long _now;
        private int _freeChannels;
        private long _wakeAt = long.MaxValue;
        private long _deviceCompleted;

        private const int Arrive = 0, DeviceDone = 1, TenantDone = 2, Wake = 3, Tick = 4, Issue = 5;

        public Simulation(IoScheduler<SimulatedIo> scheduler, SimulatedDevice device, IReadOnlyList<SimulatedTenant> tenants, long measureFrom, long end)
        {
            _scheduler = scheduler;
            _device = device;
            _tenants = tenants;
            _measureFrom = measureFrom;
            _end = end;
            _freeChannels = device.Channels;
            _stats = tenants.Select(_ => new Stats()).ToArray();
            _rng = tenants.Select((_, i) => (ulong)(i + 1) * 0x9E3779B97F4A7C15UL).ToArray();
        }

        public SimulationResult Execute()
        {
            for (int i = 0; i < _tenants.Count; i++)
            {
                var t = _tenants[i];
                long start = (long)t.Start.TotalNanoseconds;
                if (t.RateIops > 0)
                {
                    Schedule(start, Tick, null, i);
                }
                else
                {
                    for (int q = 0; q < Math.Max(1, t.QueueDepth); q++)
                    {
                        Schedule(start, Issue, null, i);
                    }
                }
            }

            while (_events.TryDequeue(out var e, out var key))
            {
                _now = key.Item1;
                if (_now > _end)
                {
                    break;
                }

                switch (e.Kind)
                {
                    case Issue:
                        IssueIo(e.Tenant);
                        break;
                    case Tick:
                        IssueIo(e.Tenant);
                        Schedule(_now + (long)(1e9 / _tenants[e.Tenant].RateIops), Tick, null, e.Tenant);
                        break;
                    case Arrive:
                        var io = e.Io!;
                        io.EnqueuedNs = _now;
                        _scheduler.Enqueue(io, new IoDescriptor(_tenants[io.TenantIndex].Class, _tenants[io.TenantIndex].Tenant, io.Read ? BlockOperation.Read : BlockOperation.Write, 0, io.Bytes, _now));
                        break;
                    case DeviceDone:
                        _freeChannels++;
                        _deviceCompleted += _now >= _measureFrom ? 1 : 0;
                        var done = e.Io!;
                        _scheduler.OnCompleted(new IoDescriptor(_tenants[done.TenantIndex].Class, _tenants[done.TenantIndex].Tenant, done.Read ? BlockOperation.Read : BlockOperation.Write, 0, done.Bytes, done.EnqueuedNs), _now);
                        Schedule(_now + (long)_tenants[done.TenantIndex].EffectiveVirtualizationCost.TotalNanoseconds, TenantDone, done, done.TenantIndex);
                        break;
                    case TenantDone:
                        Finish(e.Io!);
                        if (_tenants[e.Tenant].RateIops <= 0)
                        {
                            IssueIo(e.Tenant);
                        }

                        break;
                    case Wake:
                        if (_wakeAt == _now)
                        {
                            _wakeAt = long.MaxValue;
                        }

                        break;
                }

                Dispatch();
            }

            double seconds = (_end - _measureFrom) / 1e9;
            var results = new Dictionary<string, TenantResult>();
            for (int i = 0; i < _tenants.Count; i++)
            {
                var s = _stats[i];
                s.Latencies.Sort();
                results[_tenants[i].Name] = new TenantResult
                {
                    Name = _tenants[i].Name,
                    Completed = s.Latencies.Count,
                    Iops = s.Latencies.Count / seconds,
                    MeanLatencyUs = s.Latencies.Count == 0 ? 0 : s.Latencies.Average() / 1000,
                    P99LatencyUs = s.Latencies.Count == 0 ? 0 : s.Latencies[(int)Math.Min(s.Latencies.Count - 1, Math.Ceiling(s.Latencies.Count * 0.99) - 1)] / 1000.0,
                    MaxSchedulerDelayUs = s.MaxDelayNs / 1000.0,
                    MeanSchedulerDelayUs = s.Latencies.Count == 0 ? 0 : s.SumDelayNs / 1000.0 / s.Latencies.Count,
                };
            }

            return new SimulationResult { Tenants = results, DeviceIops = _deviceCompleted / seconds };
        }

        private void IssueIo(int tenant)
        {
            var t = _tenants[tenant];
            bool read = t.ReadFraction >= 1 || (t.ReadFraction > 0 && NextDouble(tenant) < t.ReadFraction);
            var io = new SimulatedIo { TenantIndex = tenant, Read = read, Bytes = t.IoSize, IssuedNs = _now };
            Schedule(_now + (long)t.EffectiveVirtualizationCost.TotalNanoseconds, Arrive, io, tenant);
        }

        private void Dispatch()
        {
            while (_freeChannels > 0 && _scheduler.TryDequeue(_now, out var io, out _))
            {
                _freeChannels--;
                io.DispatchedNs = _now;
                Schedule(_now + _device.ServiceNs(io.Read, io.Bytes, NextDeviceDouble()), DeviceDone, io, io.TenantIndex);
            }

            if (_freeChannels > 0 && _scheduler.Count > 0)
            {
                long next = _scheduler.NextEligibleNs(_now);
                if (next <= _now)
                {
                    next = _now + 1000; // a scheduler that says "now" but gives nothing: look again in 1 us
                }

                if (next != long.MaxValue && next < _wakeAt)
                {
                    _wakeAt = next;
                    Schedule(next, Wake, null, -1);
                }
            }
        }

        private void Finish(SimulatedIo io)
        {
            if (_now < _measureFrom)
            {
                return;
            }

            var s = _stats[io.TenantIndex];
            s.Latencies.Add(_now - io.IssuedNs);
            long delay = io.DispatchedNs - io.EnqueuedNs;
            s.SumDelayNs += delay;
            s.MaxDelayNs = Math.Max(s.MaxDelayNs, delay);
        }

        private void Schedule(long at, int kind, SimulatedIo? io, int tenant) => _events.Enqueue((kind, io, tenant), (at, _seq++));

        private double NextDeviceDouble()
        {
            ulong x = _deviceRng;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            _deviceRng = x;
            return (x * 0x2545F4914F6CDD1DUL >> 11) * (1.0 / (1UL << 53));
        }

        private double NextDouble(int tenant)
        {
            ulong x = _rng[tenant];
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            _rng[tenant] = x;
            return (x * 0x2545F4914F6CDD1DUL >> 11) * (1.0 / (1UL << 53));
        }

        private sealed class Stats
        {
            public List<long> Latencies { get; } = new();

            public long SumDelayNs;

            public long MaxDelayNs;
        }
    }
}

/// <summary>One I/O inside <see cref="SchedulerSimulator"/>.</summary>
internal sealed class SimulatedIo
{
    internal int TenantIndex;
    internal bool Read;
    internal int Bytes;
    internal long IssuedNs;
    internal long EnqueuedNs;
    internal long DispatchedNs;
}
