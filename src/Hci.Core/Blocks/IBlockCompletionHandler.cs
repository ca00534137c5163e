namespace Hci.Core.Blocks;

/// <summary>Receives completed requests on the thread that polls their queue.</summary>
/// <remarks>
/// One long-lived handler serves many requests, so completion costs no allocation. It runs inside
/// <see cref="BlockQueue.Poll"/> on the queue's owner thread and may submit new requests to the same queue.
/// </remarks>
public interface IBlockCompletionHandler
{
    /// <summary>Called once when <paramref name="request"/> has completed, successfully or not.</summary>
    /// <param name="request">The request; it may be reset and submitted again from here.</param>
    void OnCompleted(BlockRequest request);
}
