using System.Text;
using Hci.Core.Cluster;

namespace Hci.Cluster.Tests;

/// <summary>
/// The test assembly's own entry point, used only as a child process by the lease tests: <c>hold-lease ENDPOINT KEY
/// TTL_SECONDS</c> grants a lease, writes KEY with it, prints <c>holding LEASE</c>, and keeps the lease alive until
/// it is killed. The test runner does not use it.
/// </summary>
internal static class Program
{
    public static async Task<int> Main(string[] args)
    {
        if (args is not ["hold-lease", var endpoint, var key, var ttl])
        {
            await Console.Error.WriteLineAsync("This is a test assembly: run it with dotnet test (hold-lease ENDPOINT KEY TTL_SECONDS is the lease tests' child).");
            return 2;
        }

        await using var store = new EtcdClusterStore(new EtcdClusterStoreOptions { Endpoints = [endpoint] });
        var lease = await store.GrantLeaseAsync(TimeSpan.FromSeconds(int.Parse(ttl, System.Globalization.CultureInfo.InvariantCulture)));
        var applied = await store.TryCommitAsync([], [StoreWrite.Put(key, Encoding.UTF8.GetBytes("alive"), lease.Id)]);
        Console.WriteLine($"holding {lease.Id} at {applied}");
        await lease.Lost;
        await Console.Error.WriteLineAsync("lease lost");
        return 1;
    }
}
