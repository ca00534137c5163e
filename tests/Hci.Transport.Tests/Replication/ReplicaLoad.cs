using System.Diagnostics;
using Hci.Core.Reactors;
using Hci.Core.Replication;
using Hci.Transport.Replication;
using static Hci.Transport.Tests.Replication.ReplicaTestKit;

namespace Hci.Transport.Tests.Replication;

/// <summary>
/// Keeps <c>depth</c> 4 KiB requests in flight on a remote channel owned by a reactor, each resubmitted from its
/// completion on the reactor's thread: the allocation tests' load, and <see cref="MeasureAsync"/>, the loopback
/// benchmark (QD1 latency, QD32 IOPS) that feeds the replication bench.
/// </summary>
internal sealed class ReplicaLoad : IReplicaCompletionHandler, IDisposable
{
    private readonly Io[] _ios;
    private readonly bool _mixed;
    private long _completed;
    private long _failed;
    private volatile bool _stopping;
    private int _outstanding;

    private ReplicaLoad(int depth, bool mixed)
    {
        _ios = Enumerable.Range(0, depth).Select(_ => new Io(ReplicaGeometry.BlockSize)).ToArray();
        _mixed = mixed;
    }

    public long Completed => Interlocked.Read(ref _completed);

    public long Failed => Interlocked.Read(ref _failed);

    public ReplicaChannel? Channel { get; private set; }

    /// <summary>Opens a channel on <paramref name="reactor"/>, waits for it to connect and starts the load.</summary>
    public static async Task<ReplicaLoad> StartAsync(Reactor reactor, RemoteReplicaConnector connector, int depth, bool mixed)
    {
        var load = new ReplicaLoad(depth, mixed);
        load.Channel = await reactor.InvokeAsync(() => connector.Open("node-b", reactor));
        await Hci.Testing.Deadline.WaitUntilAsync(() => reactor.InvokeAsync(() => load.Channel.IsConnected).Result, "the load's channel to connect");
        await reactor.InvokeAsync(() =>
        {
            for (int i = 0; i < load._ios.Length; i++)
            {
                load._outstanding++;
                load.Submit(i, 0);
            }
        });
        return load;
    }

    public async Task StopAsync(Reactor reactor)
    {
        _stopping = true;
        await Hci.Testing.Deadline.WaitUntilAsync(() => Volatile.Read(ref _outstanding) == 0, "the load to drain");
        await reactor.InvokeAsync(() => Channel!.Dispose());
    }

    public void OnReplicaCompleted(ReplicaRequest request)
    {
        if (request.Status != ReplicaStatus.Ok)
        {
            Interlocked.Increment(ref _failed);
        }

        long n = Interlocked.Increment(ref _completed);
        if (_stopping)
        {
            _outstanding--;
            return;
        }

        Submit((int)request.UserTag, n);
    }

    public void Dispose()
    {
        foreach (var io in _ios)
        {
            io.Dispose();
        }
    }

    private void Submit(int index, long n)
    {
        var io = _ios[index];
        var op = _mixed && (n & 1) == 1 ? ReplicaOperation.Read : ReplicaOperation.Write;
        var r = io.Make(op, volume: 1, extent: index % 16, offset: (n % 1024) * ReplicaGeometry.BlockSize);
        r.Handler = this;
        r.UserTag = index;
        Channel!.Submit(r);
    }

    /// <summary>
    /// 4 KiB writes over loopback to a replica server with an in-memory store, from one client reactor at queue depth
    /// <paramref name="depth"/> for <paramref name="duration"/>: IOPS and the mean round trip (the latency at QD1).
    /// </summary>
    public static async Task<(double Iops, double MeanMicroseconds)> MeasureAsync(int depth, TimeSpan duration)
    {
        byte[] key = NewKey();
        await using var server = StartServer(CreateLocalNode(), key);
        using var connector = Connector(server, key, o => o.MaxInFlight = Math.Max(depth, 32));
        using var reactor = new Reactor(new ReactorOptions { Name = "hci-replica-bench-0" });
        using var load = await StartAsync(reactor, connector, depth, mixed: false);
        await Task.Delay(TimeSpan.FromMilliseconds(300)); // warm up
        long start = load.Completed;
        var watch = Stopwatch.StartNew();
        await Task.Delay(duration);
        long done = load.Completed - start;
        double seconds = watch.Elapsed.TotalSeconds;
        await load.StopAsync(reactor);
        double iops = done / seconds;
        return (iops, depth * 1e6 / iops);
    }
}
