using Hci.Core.Blocks;
using Hci.Core.Modules;

namespace Hci.Core.Devices.Decorators;

/// <summary>
/// Wraps a device and holds every completion back by a fixed delay per operation kind, to model a slower
/// device or a remote hop. Time comes from a <see cref="TimeProvider"/>, so tests can drive it with a virtual clock.
/// </summary>
public sealed class DelayBlockDevice : BlockDeviceDecorator
{
    private readonly TimeProvider _time;

    /// <summary>Wraps <paramref name="inner"/>.</summary>
    /// <param name="inner">The device that carries the I/O.</param>
    /// <param name="readDelay">Added to reads.</param>
    /// <param name="writeDelay">Added to writes, flushes, discards and write-zeroes.</param>
    /// <param name="timeProvider">The clock; the system's by default.</param>
    /// <param name="ownsInner">Dispose the inner device with this one.</param>
    public DelayBlockDevice(BlockDevice inner, TimeSpan readDelay, TimeSpan writeDelay, TimeProvider? timeProvider = null, bool ownsInner = true)
        : base(inner, ownsInner)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(readDelay, TimeSpan.Zero);
        ArgumentOutOfRangeException.ThrowIfLessThan(writeDelay, TimeSpan.Zero);
        _time = timeProvider ?? TimeProvider.System;
        ReadDelay = readDelay;
        WriteDelay = writeDelay;
    }

    /// <summary>Delay added to reads.</summary>
    public TimeSpan ReadDelay { get; }

    /// <summary>Delay added to every other operation.</summary>
    public TimeSpan WriteDelay { get; }

    /// <inheritdoc/>
    protected override BlockQueue CreateQueueCore(int depth) => new Queue(this, depth);

    private sealed class Queue : DecoratorQueue
    {
        private readonly DelayBlockDevice _device;
        private readonly long _readTicks;
        private readonly long _writeTicks;
        private readonly List<BlockRequest> _held = new();

        public Queue(DelayBlockDevice device, int depth)
            : base(device, device.Inner, depth)
        {
            _device = device;
            double frequency = device._time.TimestampFrequency;
            _readTicks = (long)(device.ReadDelay.TotalSeconds * frequency);
            _writeTicks = (long)(device.WriteDelay.TotalSeconds * frequency);
        }

        protected override void SubmitCore(BlockRequest request)
        {
            // The delay runs from submission, not from when the inner device's completion is next polled: a clock
            // moved between the two (a test's virtual clock) must not start the delay again after it.
            request.DueTimestamp = _device._time.GetTimestamp() + (request.Operation == BlockOperation.Read ? _readTicks : _writeTicks);
            Forward(request);
        }

        protected override void OnInnerCompleted(BlockRequest request, int result, BlockError error)
        {
            request.PendingResult = result;
            request.PendingError = error;
            _held.Add(request);
        }

        protected override int PollCore(int minCompletions, int timeoutMilliseconds)
        {
            var time = _device._time;
            long deadline = timeoutMilliseconds < 0 ? long.MaxValue : time.GetTimestamp() + (long)(timeoutMilliseconds / 1000.0 * time.TimestampFrequency);
            int done = 0;
            while (true)
            {
                InnerQueue.Poll(0, 0);
                done += ReleaseDue();
                long now = time.GetTimestamp();
                if (done >= minCompletions || timeoutMilliseconds == 0 || now >= deadline)
                {
                    return done;
                }

                long until = deadline;
                foreach (var r in _held)
                {
                    until = Math.Min(until, r.DueTimestamp);
                }

                int waitMs = until == long.MaxValue ? Timeout.Infinite : (int)Math.Clamp(Math.Ceiling((until - now) * 1000.0 / time.TimestampFrequency), 0, int.MaxValue);
                if (InnerQueue.InFlight == 0 && waitMs == Timeout.Infinite)
                {
                    return done; // nothing in flight or held, and no deadline: nothing to wait for
                }

                int arrived = InnerQueue.Poll(1, waitMs);
                if (arrived == 0 && time.GetTimestamp() < until)
                {
                    // Woken (or a virtual clock that nobody advanced): hand control back to the caller.
                    return done + ReleaseDue();
                }
            }
        }

        private int ReleaseDue()
        {
            long now = _device._time.GetTimestamp();
            int released = 0;
            for (int i = 0; i < _held.Count;)
            {
                var r = _held[i];
                if (r.DueTimestamp <= now)
                {
                    _held.RemoveAt(i);
                    Complete(r, r.PendingResult, r.PendingError);
                    released++;
                }
                else
                {
                    i++;
                }
            }

            return released;
        }
    }
}
