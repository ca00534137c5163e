namespace Hci.Core.Replication;

/// <summary>
/// Counts a volume's operations that run on its callers' tasks (replica moves and removals, and the slot drops they
/// leave behind), so that a detach can refuse new ones and wait for those in flight before it closes what they use.
/// </summary>
internal sealed class OperationGate
{
    private readonly Lock _lock = new();
    private int _count;
    private bool _closed;
    private TaskCompletionSource? _drained;

    /// <summary>Whether <see cref="CloseAsync"/> was called.</summary>
    public bool IsClosed
    {
        get
        {
            lock (_lock)
            {
                return _closed;
            }
        }
    }

    /// <summary>Enters an operation; false once <see cref="CloseAsync"/> was called.</summary>
    /// <returns>Whether the operation may run (then <see cref="Exit"/> must follow).</returns>
    public bool TryEnter()
    {
        lock (_lock)
        {
            if (_closed)
            {
                return false;
            }

            _count++;
            return true;
        }
    }

    /// <summary>Enters work that an operation in flight leaves behind (a slot to free): allowed after
    /// <see cref="CloseAsync"/> while that operation still holds the gate, so the close waits for it too.</summary>
    /// <returns>Whether the work may run (then <see cref="Exit"/> must follow).</returns>
    public bool TryEnterNested()
    {
        lock (_lock)
        {
            if (_closed && _count == 0)
            {
                return false;
            }

            _count++;
            return true;
        }
    }

    /// <summary>Ends an operation entered before.</summary>
    public void Exit()
    {
        TaskCompletionSource? drained = null;
        lock (_lock)
        {
            if (--_count == 0 && _closed)
            {
                drained = _drained;
            }
        }

        drained?.TrySetResult();
    }

    /// <summary>Refuses new operations from now on.</summary>
    /// <returns>A task that completes when none is in flight any more.</returns>
    public Task CloseAsync()
    {
        lock (_lock)
        {
            _closed = true;
            if (_count == 0)
            {
                return Task.CompletedTask;
            }

            _drained ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            return _drained.Task;
        }
    }
}
