namespace Hci.Core.Replication;

/// <summary>Receives a <see cref="ReplicaRequest"/>'s answer, on the thread that owns the channel it went to.</summary>
public interface IReplicaCompletionHandler
{
    /// <summary>Called once per submission, from <see cref="ReplicaChannel.Poll"/> or the channel's reactor, never from
    /// inside <see cref="ReplicaChannel.Submit"/>.</summary>
    /// <param name="request">The answered request; its <see cref="ReplicaRequest.Status"/> says how it went.</param>
    void OnReplicaCompleted(ReplicaRequest request);
}
