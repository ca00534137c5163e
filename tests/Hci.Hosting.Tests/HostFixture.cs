using Hci.Core.Buffers;
using Hci.Transport.Vhost;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;

namespace Hci.Hosting.Tests;

/// <summary>What the tests share: a generic host built from in-memory configuration, and the checks they make on it.</summary>
internal static class HostFixture
{
    public const int Block = 4096;

    public static IHost Build(IDictionary<string, string?> configuration, Action<IHciBuilder>? more = null)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Configuration.AddInMemoryCollection(configuration);
        var hci = builder.Services.AddHci(builder.Configuration.GetSection("Hci"));
        more?.Invoke(hci);
        builder.Services.AddHealthChecks().AddHci();
        return builder.Build();
    }

    /// <summary>What StartAsync threw, every message (a start that fails several validations throws them together).</summary>
    public static async Task<string> StartFailureAsync(IHost host)
    {
        var e = await Assert.ThrowsAnyAsync<Exception>(() => host.StartAsync());
        var messages = e is AggregateException a ? a.Flatten().InnerExceptions.Select(x => x.Message) : [e.Message];
        return string.Join(" | ", messages);
    }

    public static async Task<HealthReport> HealthAsync(IHost host)
        => await host.Services.GetRequiredService<HealthCheckService>().CheckHealthAsync();

    /// <summary>Writes a pattern through a vhost-user-blk client and reads it back.</summary>
    public static async Task WriteAndReadBackAsync(string socket, long offset, byte seed)
    {
        await using var client = VhostUserBlkClient.Connect(new VhostUserBlkClientOptions { SocketPath = socket, QueueCount = 1 });
        using var written = new AlignedBuffer(Block);
        using var read = new AlignedBuffer(Block);
        for (int i = 0; i < Block; i++)
        {
            written.Span[i] = (byte)(seed + i);
        }

        await client.WriteAsync(offset, written.Memory);
        await client.ReadAsync(offset, read.Memory);
        Assert.True(written.Span.SequenceEqual(read.Span), $"the block read back from {socket} at {offset} differs from the one written");
    }

    /// <summary>Whether this process holds a descriptor open on <paramref name="path"/>.</summary>
    public static bool HoldsOpen(string path)
    {
        string full = Path.GetFullPath(path);
        foreach (string fd in Directory.GetFiles("/proc/self/fd"))
        {
            try
            {
                if (new FileInfo(fd).LinkTarget == full)
                {
                    return true;
                }
            }
            catch (IOException)
            {
                // closed while we looked
            }
        }

        return false;
    }
}
