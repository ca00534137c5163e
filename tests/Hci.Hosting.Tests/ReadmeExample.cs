using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Hci.Hosting.Tests;

/// <summary>The README's "Embedding Hci in a .NET host" example, compiled and run by <see cref="ReadmeExampleTests"/>.</summary>
public static class ReadmeExample
{
    public static async Task<IHost> StartAsync(string dir)
    {
        // README:begin
        var builder = Host.CreateApplicationBuilder();
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Hci:Devices:disk0:Path"] = Path.Combine(dir, "disk0.img"),
            ["Hci:Devices:disk0:Size"] = "67108864",
            ["Hci:VhostUserBlk:vol0:Device"] = "disk0",
            ["Hci:VhostUserBlk:vol0:SocketPath"] = Path.Combine(dir, "vol0.sock"),
        });
        builder.Services.AddHci(builder.Configuration.GetSection("Hci"));
        builder.Services.AddHealthChecks().AddHci();
        IHost host = builder.Build();
        await host.StartAsync(); // returns once vol0.sock listens
        // README:end
        return host;
    }
}
