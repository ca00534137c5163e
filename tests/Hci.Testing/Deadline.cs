using System.Diagnostics;
using Xunit;

namespace Hci.Testing;

/// <summary>
/// Waits on a condition with a deadline instead of sleeping: the test goes on the moment the condition holds and
/// fails, saying what it waited for, when the deadline passes.
/// </summary>
public static class Deadline
{
    /// <summary>How long a wait lasts unless the test says otherwise: long enough for a loaded CI machine.</summary>
    public static readonly TimeSpan Default = TimeSpan.FromSeconds(30);

    /// <summary>Spins (yielding the processor) until <paramref name="condition"/> holds.</summary>
    /// <param name="condition">What must become true.</param>
    /// <param name="what">What is awaited, for the failure message.</param>
    /// <param name="deadline">How long to wait; <see cref="Default"/> if null.</param>
    public static void WaitUntil(Func<bool> condition, string what, TimeSpan? deadline = null)
    {
        var limit = deadline ?? Default;
        var watch = Stopwatch.StartNew();
        while (!condition())
        {
            Assert.True(watch.Elapsed < limit, $"timed out after {limit.TotalSeconds:0.#} s waiting for {what}");
            Thread.Yield();
        }
    }

    /// <summary>Checks <paramref name="condition"/> every few milliseconds, without holding a thread, until it holds.</summary>
    /// <param name="condition">What must become true.</param>
    /// <param name="what">What is awaited, for the failure message.</param>
    /// <param name="deadline">How long to wait; <see cref="Default"/> if null.</param>
    /// <param name="detail">What else the failure message says (logs, the last state seen); read only on failure.</param>
    /// <returns>A task that completes when the condition holds.</returns>
    public static Task WaitUntilAsync(Func<bool> condition, string what, TimeSpan? deadline = null, Func<string>? detail = null) =>
        WaitUntilAsync(() => Task.FromResult(condition()), what, deadline, detail, TimeSpan.FromMilliseconds(10));

    /// <summary>Checks an asynchronous <paramref name="condition"/> (a command, a store read) until it holds, every
    /// <paramref name="every"/> (200 ms unless said). The condition may throw to fail at once (a process that exited).</summary>
    /// <param name="condition">What must become true.</param>
    /// <param name="what">What is awaited, for the failure message.</param>
    /// <param name="deadline">How long to wait; <see cref="Default"/> if null.</param>
    /// <param name="detail">What else the failure message says (logs, the last state seen); read only on failure.</param>
    /// <param name="every">How often to check; 200 ms if null.</param>
    /// <returns>A task that completes when the condition holds.</returns>
    public static async Task WaitUntilAsync(Func<Task<bool>> condition, string what, TimeSpan? deadline = null, Func<string>? detail = null, TimeSpan? every = null)
    {
        var limit = deadline ?? Default;
        var watch = Stopwatch.StartNew();
        while (!await condition().ConfigureAwait(false))
        {
            if (watch.Elapsed >= limit)
            {
                Assert.Fail($"timed out after {limit.TotalSeconds:0.#} s waiting for {what}{(detail == null ? "" : $": {detail()}")}");
            }

            await Task.Delay(every ?? TimeSpan.FromMilliseconds(200)).ConfigureAwait(false);
        }
    }

    /// <summary>Whether <paramref name="task"/> completes (in any state) within <paramref name="limit"/>; its outcome
    /// is the caller's to observe.</summary>
    /// <param name="task">The task.</param>
    /// <param name="limit">How long to give it.</param>
    /// <returns>True when it completed in time.</returns>
    public static async Task<bool> CompletesWithinAsync(Task task, TimeSpan limit)
    {
        try
        {
            await task.WaitAsync(limit).ConfigureAwait(false);
        }
        catch (TimeoutException) when (!task.IsCompleted)
        {
            return false;
        }
        catch (Exception) when (task.IsCompleted)
        {
            // Faulted or canceled: completed all the same.
        }

        return true;
    }
}
