using System.Numerics;
using Hci.Core.Buffers;

namespace Hci.Transport.Iscsi;

/// <summary>
/// The tasks of one connection: created as the command window fills, then reused, each with its data buffer, so
/// that a steady stream of commands allocates nothing. Buffer bytes are counted against the pool's own bound and a
/// shared budget: an initiator cannot make the target allocate more by opening commands it never completes.
/// Used on one thread (the connection's reactor).
/// </summary>
internal sealed class IscsiTaskPool
{
    // How many of the most recently freed tasks are searched for one whose buffer is big enough.
    private const int Search = 8;

    private readonly List<IscsiTask> _free;
    private readonly List<IscsiTask> _all;
    private readonly int _maxTasks;
    private readonly long _maxBufferedBytes;
    private readonly IIscsiBufferBudget? _shared;
    private long _bufferedBytes;

    /// <summary>Creates an empty pool.</summary>
    /// <param name="maxTasks">The most tasks it creates.</param>
    /// <param name="maxBufferedBytes">The most buffer bytes its tasks hold together.</param>
    /// <param name="shared">A budget shared with other pools, or null.</param>
    public IscsiTaskPool(int maxTasks, long maxBufferedBytes, IIscsiBufferBudget? shared)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxTasks, 1);
        _maxTasks = maxTasks;
        _maxBufferedBytes = maxBufferedBytes;
        _shared = shared;
        _free = new List<IscsiTask>(maxTasks);
        _all = new List<IscsiTask>(maxTasks);
    }

    /// <summary>Tasks created so far.</summary>
    public int Created => _all.Count;

    /// <summary>Tasks in the pool now.</summary>
    public int FreeCount => _free.Count;

    /// <summary>Buffer bytes held by the pool's tasks.</summary>
    public long BufferedBytes => _bufferedBytes;

    /// <summary>
    /// A task with a buffer of at least <paramref name="bytes"/>: the most recently freed one whose buffer is big
    /// enough, among the last few freed; else a new task while under the limit; else the last freed, its buffer
    /// grown. Null when every task is taken or the buffer budget is spent (the command gets TASK SET FULL).
    /// </summary>
    /// <param name="bytes">Bytes the command moves.</param>
    /// <returns>The task, or null.</returns>
    public IscsiTask? Take(int bytes)
    {
        IscsiTask? t = null;
        int end = _free.Count - 1;
        for (int i = end; i >= 0 && i >= end - Search; i--)
        {
            if (_free[i].Capacity >= bytes)
            {
                t = _free[i];
                _free[i] = _free[end];
                _free.RemoveAt(end);
                break;
            }
        }

        if (t == null && _all.Count < _maxTasks)
        {
            t = new IscsiTask();
            _all.Add(t);
        }
        else if (t == null && end >= 0)
        {
            t = _free[end];
            _free.RemoveAt(end);
        }

        if (t == null)
        {
            return null;
        }

        if (bytes > t.Capacity && !Grow(t, bytes))
        {
            _free.Add(t);
            return null;
        }

        t.Abort = null;
        t.State = IscsiTaskState.Idle;
        return t;
    }

    /// <summary>Gives a task back; its buffer stays with it for the next command.</summary>
    /// <param name="t">A task this pool gave out.</param>
    public void Release(IscsiTask t)
    {
        t.State = IscsiTaskState.Idle;
        t.Path = null;
        t.Task.Buffer = null;
        _free.Add(t);
    }

    /// <summary>Frees every task's buffer and gives the bytes back (once no device can write into them).</summary>
    public void FreeBuffers()
    {
        foreach (var t in _all)
        {
            FreeBuffer(t);
        }
    }

    private bool Grow(IscsiTask t, int bytes)
    {
        int size = (int)Math.Min(Math.Max(4096, BitOperations.RoundUpToPowerOf2((uint)bytes)), int.MaxValue - 4095);
        size = Math.Max(size, (bytes + 4095) & ~4095);
        long more = size - t.Capacity;
        if (!Reserve(more))
        {
            // Give back the spare buffers of idle tasks first.
            foreach (var idle in _free)
            {
                if (idle != t)
                {
                    FreeBuffer(idle);
                }
            }

            if (!Reserve(more))
            {
                return false;
            }
        }

        if (t.Buffer != null)
        {
            ((IDisposable)t.Buffer).Dispose();
        }

        t.Buffer = new AlignedBuffer(size);
        return true;
    }

    private void FreeBuffer(IscsiTask t)
    {
        if (t.Buffer != null)
        {
            Unreserve(t.Capacity);
            ((IDisposable)t.Buffer).Dispose();
            t.Buffer = null;
        }
    }

    private bool Reserve(long bytes)
    {
        if (_bufferedBytes + bytes > _maxBufferedBytes || (_shared != null && !_shared.TryReserveBuffers(bytes)))
        {
            return false;
        }

        _bufferedBytes += bytes;
        return true;
    }

    private void Unreserve(long bytes)
    {
        _bufferedBytes -= bytes;
        _shared?.ReleaseBuffers(bytes);
    }
}
