using Hci.Core.Blocks;
using Hci.Core.Modules;

namespace Hci.Core.Devices.Decorators;

/// <summary>
/// Wraps a device and injects faults into chosen ranges: errors such as EIO, torn reads and corrupted reads,
/// to test what sits above a device (checksums, replication, error paths).
/// </summary>
/// <remarks>Rules can be added and removed from any thread while I/O runs.</remarks>
public sealed class FaultInjectionBlockDevice : BlockDeviceDecorator
{
    private FaultRule[] _rules = [];

    /// <summary>Wraps <paramref name="inner"/>.</summary>
    /// <param name="inner">The device that carries the I/O.</param>
    /// <param name="ownsInner">Dispose the inner device with this one.</param>
    public FaultInjectionBlockDevice(BlockDevice inner, bool ownsInner = true)
        : base(inner, ownsInner)
    {
    }

    /// <summary>The rules in force.</summary>
    public IReadOnlyList<FaultRule> Rules => Volatile.Read(ref _rules);

    /// <summary>Adds a rule.</summary>
    /// <param name="rule">The rule.</param>
    /// <returns>The same rule, to remove it later.</returns>
    public FaultRule Add(FaultRule rule)
    {
        ArgumentNullException.ThrowIfNull(rule);
        while (true)
        {
            var current = Volatile.Read(ref _rules);
            if (Interlocked.CompareExchange(ref _rules, [.. current, rule], current) == current)
            {
                return rule;
            }
        }
    }

    /// <summary>Removes a rule.</summary>
    /// <param name="rule">The rule.</param>
    public void Remove(FaultRule rule)
    {
        while (true)
        {
            var current = Volatile.Read(ref _rules);
            if (Interlocked.CompareExchange(ref _rules, current.Where(r => r != rule).ToArray(), current) == current)
            {
                return;
            }
        }
    }

    /// <summary>Removes every rule.</summary>
    public void Clear() => Volatile.Write(ref _rules, []);

    /// <inheritdoc/>
    protected override BlockQueue CreateQueueCore(int depth) => new Queue(this, depth);

    private FaultRule? FindRule(BlockRequest request, bool errors)
    {
        foreach (var rule in Volatile.Read(ref _rules))
        {
            if ((rule.Kind == FaultKind.Error) == errors && rule.Matches(request) && rule.TryConsume())
            {
                return rule;
            }
        }

        return null;
    }

    private sealed unsafe class Queue : DecoratorQueue
    {
        private readonly FaultInjectionBlockDevice _device;

        public Queue(FaultInjectionBlockDevice device, int depth)
            : base(device, device.Inner, depth)
        {
            _device = device;
        }

        protected override void SubmitCore(BlockRequest request)
        {
            var rule = _device.FindRule(request, errors: true);
            if (rule != null)
            {
                CompleteLater(request, -rule.Errno, BlockError.Device);
                return;
            }

            Forward(request);
        }

        protected override int PollCore(int minCompletions, int timeoutMilliseconds)
        {
            int before = InFlight;
            InnerQueue.Poll(minCompletions, timeoutMilliseconds);
            return before - InFlight;
        }

        protected override void OnInnerCompleted(BlockRequest request, int result, BlockError error)
        {
            if (result > 0 && request.Operation == BlockOperation.Read)
            {
                var rule = _device.FindRule(request, errors: false);
                if (rule != null)
                {
                    Damage(request, rule);
                }
            }

            Complete(request, result, error);
        }

        private void Damage(BlockRequest request, FaultRule rule)
        {
            int lbs = _device.Geometry.LogicalBlockSize;
            long blocks = request.Length / lbs;
            long position = request.Offset;
            long tornFrom = request.Offset + (Math.Max(1, blocks / 2) * lbs);
            foreach (var s in request.Segments)
            {
                var span = new Span<byte>((void*)s.Address, (int)s.Length);
                for (int i = 0; i < span.Length; i += lbs)
                {
                    long blockOffset = position + i;
                    int n = Math.Min(lbs, span.Length - i);
                    if (rule.Kind == FaultKind.TornRead)
                    {
                        if (blockOffset >= tornFrom || blocks == 1 && i == 0)
                        {
                            var block = span.Slice(i, n);
                            (blocks == 1 ? block[(n / 2)..] : block).Clear();
                        }
                    }
                    else if (rule.Overlaps(blockOffset, n))
                    {
                        span[i + (int)((blockOffset / lbs) % n)] ^= 0x01;
                    }
                }

                position += s.Length;
            }
        }
    }
}
