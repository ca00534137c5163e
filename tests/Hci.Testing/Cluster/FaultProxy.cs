using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Threading.Channels;

namespace Hci.Testing;

/// <summary>
/// A fault-injecting TCP proxy of the tests' own (this kernel has no <c>netem</c> qdisc): it forwards every connection
/// it accepts to one target and, on the test's word, delays every byte by a fixed time (<see cref="Delay"/>), stalls
/// (holds every byte, connections open: a silent peer, <see cref="Stall"/>), or cuts (resets every connection and
/// every new one, <see cref="Cut"/>). A node that advertises the proxy's address (<c>--advertise</c>) is reached by
/// its peers only through it. Disposing closes the listener and every connection.
/// </summary>
public sealed class FaultProxy : IAsyncDisposable
{
    private const int ChunkSize = 64 * 1024;
    private readonly Socket _listener;
    private readonly EndPoint _target;
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Socket> _sockets = [];
    private readonly Task _accepting;
    private TaskCompletionSource _flowing = Flowing();
    private long _delayTicks;
    private long _connections;
    private long _bytes;
    private volatile bool _cut;

    private FaultProxy(Socket listener, EndPoint target)
    {
        _listener = listener;
        _target = target;
        _accepting = AcceptAsync();
    }

    /// <summary>Where the proxy listens.</summary>
    public IPEndPoint EndPoint => (IPEndPoint)_listener.LocalEndPoint!;

    /// <summary>Connections accepted so far.</summary>
    public long Connections => Interlocked.Read(ref _connections);

    /// <summary>Bytes forwarded so far, both ways.</summary>
    public long ForwardedBytes => Interlocked.Read(ref _bytes);

    /// <summary>How long every chunk of bytes is held before it is forwarded, each way (zero: none). Order is kept.</summary>
    public TimeSpan Delay
    {
        get => TimeSpan.FromTicks(Interlocked.Read(ref _delayTicks));
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, TimeSpan.Zero);
            Interlocked.Exchange(ref _delayTicks, value.Ticks);
        }
    }

    /// <summary>Starts a proxy to <paramref name="target"/> on a free port of <paramref name="listen"/>.</summary>
    /// <param name="target">Where connections go.</param>
    /// <param name="listen">The address to listen on; 127.0.0.1 if null.</param>
    /// <returns>The running proxy.</returns>
    public static FaultProxy Start(IPEndPoint target, IPAddress? listen = null)
    {
        ArgumentNullException.ThrowIfNull(target);
        var listener = new Socket(SocketType.Stream, ProtocolType.Tcp);
        try
        {
            listener.Bind(new IPEndPoint(listen ?? IPAddress.Loopback, 0));
            listener.Listen(64);
            return new FaultProxy(listener, target);
        }
        catch
        {
            listener.Dispose();
            throw;
        }
    }

    /// <summary>Holds every byte from now on, both ways, with every connection left open (new ones are accepted and
    /// held too): the peers see a silent link, as behind a partition that drops packets.</summary>
    public void Stall()
    {
        lock (_sockets)
        {
            if (_flowing.Task.IsCompleted)
            {
                _flowing = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            }
        }
    }

    /// <summary>Forwards again what <see cref="Stall"/> held, and what follows.</summary>
    public void Resume()
    {
        lock (_sockets)
        {
            _flowing.TrySetResult();
        }
    }

    /// <summary>Resets every open connection both ways (TCP RST) and every new one until <see cref="Restore"/>.</summary>
    public void Cut()
    {
        _cut = true;
        List<Socket> open;
        lock (_sockets)
        {
            open = [.. _sockets];
            _sockets.Clear();
        }

        foreach (var socket in open)
        {
            Reset(socket);
        }
    }

    /// <summary>Ends <see cref="Cut"/> and <see cref="Stall"/> and sets <see cref="Delay"/> to zero: connections are
    /// forwarded as they come.</summary>
    public void Restore()
    {
        Delay = TimeSpan.Zero;
        _cut = false;
        Resume();
    }

    /// <summary>Closes the listener and every connection.</summary>
    /// <returns>A task that completes when the proxy has stopped.</returns>
    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        _listener.Dispose();
        Resume();
        Cut();
        try
        {
            await _accepting.ConfigureAwait(false);
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
        {
        }

        _stop.Dispose();
    }

    private static TaskCompletionSource Flowing()
    {
        var flowing = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        flowing.SetResult();
        return flowing;
    }

    private static void Reset(Socket socket)
    {
        try
        {
            socket.LingerState = new LingerOption(true, 0);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
        }

        socket.Dispose();
    }

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _listener.AcceptAsync(_stop.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }

            Interlocked.Increment(ref _connections);
            if (_cut)
            {
                Reset(client);
                continue;
            }

            _ = ForwardAsync(client);
        }
    }

    private async Task ForwardAsync(Socket client)
    {
        var server = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        client.NoDelay = true;
        lock (_sockets)
        {
            _sockets.Add(client);
            _sockets.Add(server);
        }

        try
        {
            await server.ConnectAsync(_target, _stop.Token).ConfigureAwait(false);
            await Task.WhenAll(PumpAsync(client, server), PumpAsync(server, client)).ConfigureAwait(false);
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException or ChannelClosedException)
        {
            // A cut, a peer that closed, or the proxy's end.
        }
        finally
        {
            lock (_sockets)
            {
                _sockets.Remove(client);
                _sockets.Remove(server);
            }

            client.Dispose();
            server.Dispose();
        }
    }

    // One direction: a reader that stamps each chunk with when it may go, and a writer that waits for that time and
    // for the link to flow. Either ending closes the other's socket, so that a half-dead connection does not linger.
    private async Task PumpAsync(Socket from, Socket to)
    {
        var chunks = Channel.CreateBounded<(long Due, byte[] Data, int Length)>(new BoundedChannelOptions(64) { SingleReader = true, SingleWriter = true });
        var writing = Task.Run(async () =>
        {
            try
            {
                await foreach (var (due, data, length) in chunks.Reader.ReadAllAsync(_stop.Token).ConfigureAwait(false))
                {
                    // Timer waits may end a little early: wait again until the chunk is due by the precise clock.
                    TimeSpan wait;
                    while ((wait = Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), due)) > TimeSpan.Zero)
                    {
                        await Task.Delay(wait + TimeSpan.FromMilliseconds(1), _stop.Token).ConfigureAwait(false);
                    }

                    await FlowingAsync().ConfigureAwait(false);
                    await to.SendAsync(data.AsMemory(0, length), SocketFlags.None, _stop.Token).ConfigureAwait(false);
                    Interlocked.Add(ref _bytes, length);
                }

                to.Shutdown(SocketShutdown.Send);
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                from.Dispose();
            }
        });

        try
        {
            while (true)
            {
                await FlowingAsync().ConfigureAwait(false);
                var data = new byte[ChunkSize];
                int n = await from.ReceiveAsync(data, SocketFlags.None, _stop.Token).ConfigureAwait(false);
                if (n == 0)
                {
                    break;
                }

                await chunks.Writer.WriteAsync((Stopwatch.GetTimestamp() + (long)(Delay.TotalSeconds * Stopwatch.Frequency), data, n), _stop.Token).ConfigureAwait(false);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
        {
            to.Dispose();
        }
        finally
        {
            chunks.Writer.TryComplete();
        }

        await writing.ConfigureAwait(false);
    }

    private Task FlowingAsync()
    {
        Task flowing;
        lock (_sockets)
        {
            flowing = _flowing.Task;
        }

        return flowing.IsCompleted ? flowing : flowing.WaitAsync(_stop.Token);
    }
}
