using Hci.Core.Blocks;
using Hci.Core.Devices.Decorators;
using Hci.Core.Modules;
using Xunit;

namespace Hci.Testing;

/// <summary>
/// Fault injection for the SCSI tests: while stalled, writes are held before they reach the medium (a device that
/// has taken them but not yet done them), until <see cref="Release"/>. Reads and everything else pass at once.
/// </summary>
internal sealed class StallWritesBlockDevice(BlockDevice inner) : BlockDeviceDecorator(inner, ownsInner: false)
{
    private readonly ManualResetEventSlim _released = new(true);
    private int _held;

    /// <summary>Writes held so far (and not yet passed on), across all queues.</summary>
    public int Held => Volatile.Read(ref _held);

    public void Stall() => _released.Reset();

    public void Release() => _released.Set();

    /// <summary>Waits, up to a deadline, until <paramref name="count"/> writes are held.</summary>
    public void WaitHeld(int count)
    {
        Assert.True(SpinWait.SpinUntil(() => Held >= count, TimeSpan.FromSeconds(30)), $"only {Held} writes reached the device");
    }

    protected override BlockQueue CreateQueueCore(int depth) => new Queue(this, depth);

    private sealed class Queue(StallWritesBlockDevice device, int depth) : DecoratorQueue(device, device.Inner, depth)
    {
        private readonly List<BlockRequest> _held = [];

        protected override void SubmitCore(BlockRequest request)
        {
            if (request.Operation == BlockOperation.Write && !device._released.IsSet)
            {
                _held.Add(request);
                Interlocked.Increment(ref device._held);
                return;
            }

            Forward(request);
        }

        protected override int PollCore(int minCompletions, int timeoutMilliseconds)
        {
            if (_held.Count > 0)
            {
                // Held writes wait for the release (briefly, so that the caller gets to see new work).
                if (device._released.Wait(timeoutMilliseconds < 0 ? 5 : Math.Min(timeoutMilliseconds, 5)))
                {
                    foreach (var r in _held)
                    {
                        Forward(r);
                    }

                    Interlocked.Add(ref device._held, -_held.Count);
                    _held.Clear();
                }
                else
                {
                    return InnerQueue.Poll(0, 0);
                }
            }

            return InnerQueue.Poll(minCompletions, timeoutMilliseconds);
        }
    }
}
