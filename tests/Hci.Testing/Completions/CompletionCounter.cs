using Hci.Core.Blocks;

namespace Hci.Testing;

/// <summary>
/// A completion handler that counts what it is given and keeps nothing else: it allocates nothing, so it serves
/// the allocation tests, and where a test only needs a handler it serves as a sink.
/// </summary>
public sealed class CompletionCounter : IBlockCompletionHandler
{
    private int _count;

    /// <summary>Completions delivered so far.</summary>
    public int Count => Volatile.Read(ref _count);

    /// <inheritdoc/>
    public void OnCompleted(BlockRequest request) => Interlocked.Increment(ref _count);
}
