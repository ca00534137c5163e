using Hci.Core.Blocks;

namespace Hci.Core.Modules;

/// <summary>
/// Base of queues whose device completes work during submission (memory, null): completions are
/// held and delivered at the next poll, and an idle poll waits for <see cref="Wake"/> or its timeout.
/// </summary>
public abstract class SynchronousBlockQueue : BlockQueue
{
    private readonly SemaphoreSlim _wake = new(0, 1);

    /// <summary>Creates the queue.</summary>
    /// <param name="device">The device.</param>
    protected SynchronousBlockQueue(BlockDevice device)
        : base(device)
    {
    }

    /// <inheritdoc/>
    public override void Wake()
    {
        try
        {
            if (_wake.CurrentCount == 0)
            {
                _wake.Release();
            }
        }
        catch (SemaphoreFullException)
        {
            // Already signalled.
        }
        catch (ObjectDisposedException)
        {
            // The queue closed: nobody to wake.
        }
    }

    /// <inheritdoc/>
    protected override int PollCore(int minCompletions, int timeoutMilliseconds)
    {
        // Work completes in SubmitCore, so a poll that still wants completions here has nothing in flight:
        // it waits only for a wake or the timeout.
        if (minCompletions > 0 && timeoutMilliseconds != 0 && !HasDeferredCompletions)
        {
            _wake.Wait(timeoutMilliseconds);
        }

        return 0;
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _wake.Dispose();
        }

        base.Dispose(disposing);
    }
}
