using Microsoft.Extensions.Time.Testing;

namespace Hci.Testing;

/// <summary>
/// A fake clock that counts the one-shot timers made on it that have not fired: a test steps the clock whenever code
/// under test waits on it (a pacer waiting for its rate), and only then, so no timing depends on the test's speed.
/// </summary>
public sealed class PendingTimerTimeProvider : FakeTimeProvider
{
    private int _pending;

    /// <summary>Timers made on this clock that have not fired yet.</summary>
    public int Pending => Volatile.Read(ref _pending);

    /// <inheritdoc/>
    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        Interlocked.Increment(ref _pending);
        int fired = 0;
        return base.CreateTimer(
            s =>
            {
                if (Interlocked.Exchange(ref fired, 1) == 0)
                {
                    Interlocked.Decrement(ref _pending);
                }

                callback(s);
            },
            state,
            dueTime,
            period);
    }
}
