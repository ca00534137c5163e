namespace Hci.Cluster.Tests;

/// <summary>One etcd shared by a test class; each test uses a key prefix of its own.</summary>
public sealed class EtcdFixture : IAsyncLifetime
{
    private EtcdServer? _server;

    public EtcdServer Server => _server ?? throw new InvalidOperationException("etcd is not started");

    public async Task InitializeAsync() => _server = await EtcdServer.StartAsync();

    public async Task DisposeAsync()
    {
        if (_server is not null)
        {
            await _server.DisposeAsync();
        }
    }

    /// <summary>A store on this etcd under a fresh prefix.</summary>
    public EtcdClusterStore Store(string? prefix = null) => new(new EtcdClusterStoreOptions
    {
        Endpoints = [Server.ClientUrl],
        KeyPrefix = prefix ?? $"test-{Guid.NewGuid():N}/",
    });
}
