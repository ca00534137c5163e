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
    /// <returns>A task that completes when the condition holds.</returns>
    public static async Task WaitUntilAsync(Func<bool> condition, string what, TimeSpan? deadline = null)
    {
        var limit = deadline ?? Default;
        var watch = Stopwatch.StartNew();
        while (!condition())
        {
            Assert.True(watch.Elapsed < limit, $"timed out after {limit.TotalSeconds:0.#} s waiting for {what}");
            await Task.Delay(10);
        }
    }

    /// <summary>Checks an asynchronous <paramref name="condition"/> (a command, a store read) every 200 ms until it
    /// holds.</summary>
    /// <param name="condition">What must become true.</param>
    /// <param name="what">What is awaited, for the failure message.</param>
    /// <param name="deadline">How long to wait; <see cref="Default"/> if null.</param>
    /// <returns>A task that completes when the condition holds.</returns>
    public static async Task WaitUntilAsync(Func<Task<bool>> condition, string what, TimeSpan? deadline = null)
    {
        var limit = deadline ?? Default;
        var watch = Stopwatch.StartNew();
        while (!await condition().ConfigureAwait(false))
        {
            Assert.True(watch.Elapsed < limit, $"timed out after {limit.TotalSeconds:0.#} s waiting for {what}");
            await Task.Delay(200).ConfigureAwait(false);
        }
    }
}
