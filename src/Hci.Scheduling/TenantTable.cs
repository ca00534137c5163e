namespace Hci.Scheduling;

/// <summary>Per-tenant state in a dense array, found by tenant id; a tenant is added on first sight (the only allocation).</summary>
/// <typeparam name="TState">The state kept per tenant.</typeparam>
internal sealed class TenantTable<TState>
    where TState : class
{
    private readonly Dictionary<int, int> _index = new();
    private readonly Func<int, TState> _create;
    private TState[] _states = new TState[8];

    public TenantTable(Func<int, TState> create) => _create = create;

    public int Count { get; private set; }

    public TState this[int slot] => _states[slot];

    public TState Get(int tenant)
    {
        if (_index.TryGetValue(tenant, out int slot))
        {
            return _states[slot];
        }

        if (Count == _states.Length)
        {
            Array.Resize(ref _states, Count * 2);
        }

        var state = _create(tenant);
        _states[Count] = state;
        _index[tenant] = Count++;
        return state;
    }

    public bool TryGet(int tenant, out TState state)
    {
        if (_index.TryGetValue(tenant, out int slot))
        {
            state = _states[slot];
            return true;
        }

        state = null!;
        return false;
    }
}
