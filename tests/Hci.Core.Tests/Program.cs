using System.Globalization;
using System.Text;
using Hci.Core.Cluster;

namespace Hci.Core.Tests;

/// <summary>
/// The entry point of this test assembly when a test runs it as a second process (<c>dotnet exec Hci.Core.Tests.dll
/// MODE ...</c>), to use a local cluster store from another process: the test runner never calls it.
/// </summary>
public static class Program
{
    /// <summary>Runs one mode: <c>increment DIR KEY COUNT</c> (compare-and-swap increments of a counter) or
    /// <c>hold-lease DIR KEY</c> (puts KEY with a lease, prints "ready", holds it until standard input closes).</summary>
    /// <param name="args">The mode and its arguments.</param>
    /// <returns>0 on success.</returns>
    public static async Task<int> Main(string[] args)
    {
        switch (args)
        {
            case ["store-writer", var file]:
                return Storage.StoreWriterProcess.RunMode(file);
            case ["increment", var dir, var key, var count]:
                await using (var store = LocalClusterStore.Open(dir))
                {
                    await IncrementAsync(store, key, int.Parse(count, CultureInfo.InvariantCulture));
                }

                return 0;
            case ["hold-lease", var dir, var key]:
                await using (var store = LocalClusterStore.Open(dir))
                {
                    var lease = await store.GrantLeaseAsync(TimeSpan.FromSeconds(5));
                    await store.TryCommitAsync([], [StoreWrite.Put(key, Encoding.UTF8.GetBytes(Environment.ProcessId.ToString(CultureInfo.InvariantCulture)), lease.Id)]);
                    Console.WriteLine("ready");
                    await Console.In.ReadToEndAsync();
                }

                return 0;
            default:
                await Console.Error.WriteLineAsync("usage: store-writer FILE | increment DIR KEY COUNT | hold-lease DIR KEY");
                return 2;
        }
    }

    /// <summary>Adds one to the decimal counter at <paramref name="key"/>, <paramref name="count"/> times, each by
    /// compare-and-swap (read, commit at the read revision, again when another writer came first).</summary>
    /// <param name="store">The store.</param>
    /// <param name="key">The counter's key.</param>
    /// <param name="count">How many increments.</param>
    /// <returns>A task that completes when all are committed.</returns>
    public static async Task IncrementAsync(IClusterStore store, string key, int count)
    {
        for (int i = 0; i < count; i++)
        {
            while (true)
            {
                var entry = await store.GetAsync(key);
                long value = entry is null ? 0 : long.Parse(Encoding.UTF8.GetString(entry.Value.Value.Span), CultureInfo.InvariantCulture);
                byte[] next = Encoding.UTF8.GetBytes((value + 1).ToString(CultureInfo.InvariantCulture));
                if (await store.TryCommitAsync([new StoreCondition(key, entry?.ModRevision ?? 0)], [StoreWrite.Put(key, next)]) is not null)
                {
                    break;
                }
            }
        }
    }
}
