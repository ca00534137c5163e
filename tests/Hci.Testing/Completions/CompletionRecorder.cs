using System.Collections.Concurrent;
using Hci.Core.Blocks;

namespace Hci.Testing;

/// <summary>A completion handler that keeps every completed request, in the order they were delivered.</summary>
public sealed class CompletionRecorder : IBlockCompletionHandler
{
    /// <summary>The requests completed so far, oldest first; a test takes them out as it checks them.</summary>
    public ConcurrentQueue<BlockRequest> Done { get; } = new();

    /// <inheritdoc/>
    public void OnCompleted(BlockRequest request) => Done.Enqueue(request);
}
