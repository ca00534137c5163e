using System.Collections.Concurrent;
using Hci.Core.Reactors;

namespace Hci.Core.Replication;

/// <summary>
/// The thread a volume's control work (fencing, reconciliation, resync, repair, marking clean) runs its replica
/// requests on: a reactor of its own with its own channels, so background copies never share a queue with the data
/// path. Callers are ordinary async code; each request costs a task (control plane, not per I/O).
/// </summary>
internal sealed class ControlLane : IPoller, IReplicaCompletionHandler, IAsyncDisposable
{
    private readonly Reactor _reactor;
    private readonly IReplicaConnector _connector;
    private readonly Dictionary<string, ReplicaChannel> _channels = [];
    private readonly ConcurrentQueue<(string Node, ReplicaRequest Request)> _inbox = new();
    private readonly IDisposable _poller;

    public ControlLane(string name, IReplicaConnector connector)
    {
        _connector = connector;
        _reactor = new Reactor(new ReactorOptions { Name = name, PollWindow = TimeSpan.FromMicroseconds(50) });
        _poller = _reactor.InvokeAsync(() => _reactor.AddPoller(this)).GetAwaiter().GetResult();
    }

    /// <summary>Sends the request on the lane's thread and completes with it answered.</summary>
    public Task<ReplicaRequest> ExecuteAsync(string nodeId, ReplicaRequest request)
    {
        var done = new TaskCompletionSource<ReplicaRequest>(TaskCreationOptions.RunContinuationsAsynchronously);
        request.Handler = this;
        request.UserState = done;
        _inbox.Enqueue((nodeId, request));
        _reactor.Wake();
        return done.Task;
    }

    PollStatus IPoller.Poll()
    {
        bool busy = false;
        while (_inbox.TryDequeue(out var item))
        {
            busy = true;
            Channel(item.Node).Submit(item.Request);
        }

        foreach (var channel in _channels.Values)
        {
            if (channel.Poll() > 0)
            {
                busy = true;
            }
        }

        return busy ? PollStatus.Busy : PollStatus.Idle;
    }

    PollStatus IPoller.PrepareToSleep(ref int maxSleepMilliseconds)
    {
        // Local channels complete through the device queues, which this reactor does not sleep in: look again soon
        // while anything is in flight.
        foreach (var channel in _channels.Values)
        {
            if (channel.InFlight > 0)
            {
                maxSleepMilliseconds = maxSleepMilliseconds < 0 ? 1 : Math.Min(maxSleepMilliseconds, 1);
                break;
            }
        }

        return _inbox.IsEmpty ? PollStatus.Idle : PollStatus.Busy;
    }

    void IReplicaCompletionHandler.OnReplicaCompleted(ReplicaRequest request)
    {
        var done = (TaskCompletionSource<ReplicaRequest>)request.UserState!;
        request.UserState = null;
        done.TrySetResult(request);
    }

    public async ValueTask DisposeAsync()
    {
        await _reactor.InvokeAsync(() =>
        {
            _poller.Dispose();
            foreach (var channel in _channels.Values)
            {
                channel.Dispose();
            }

            _channels.Clear();
        }).ConfigureAwait(false);
        await _reactor.StopAsync().ConfigureAwait(false);
        _reactor.Dispose();
    }

    private ReplicaChannel Channel(string nodeId)
    {
        if (!_channels.TryGetValue(nodeId, out var channel))
        {
            channel = _connector.Open(nodeId, _reactor);
            _channels.Add(nodeId, channel);
        }

        return channel;
    }
}
