namespace Hci.Core.Cluster;

/// <summary>A lease of the local store: it never lapses while the process lives; disposing revokes it.</summary>
internal sealed class LocalStoreLease : IStoreLease
{
    private readonly LocalClusterStore _store;
    private readonly TaskCompletionSource _lost = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public LocalStoreLease(LocalClusterStore store, long id)
    {
        _store = store;
        Id = id;
    }

    public long Id { get; }

    public Task Lost => _lost.Task;

    public async ValueTask DisposeAsync()
    {
        if (_lost.Task.IsCompleted)
        {
            return;
        }

        try
        {
            await _store.RevokeAsync(this).ConfigureAwait(false);
        }
        finally
        {
            MarkLost();
        }
    }

    internal void MarkLost() => _lost.TrySetResult();
}
