using System.Text.RegularExpressions;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;

namespace Hci.Hosting.Tests;

/// <summary>The README's DI example is this project's <see cref="ReadmeExample"/>: the same code, and it works.</summary>
public sealed partial class ReadmeExampleTests : IDisposable
{
    private const string Section = "## Embedding Hci in a .NET host";
    private readonly string _dir = Directory.CreateTempSubdirectory("hci-readme-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void TheReadmesDiExampleIsTheCodeThisProjectCompiles()
    {
        string readme = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "README.md"));
        int section = readme.IndexOf(Section, StringComparison.Ordinal);
        Assert.True(section >= 0, $"the README has a section \"{Section}\"");
        var block = CodeBlock().Match(readme, section);
        Assert.True(block.Success, $"the README's section \"{Section}\" has a csharp code block");

        string source = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "ReadmeExample.cs"));
        int begin = source.IndexOf("// README:begin", StringComparison.Ordinal);
        int end = source.IndexOf("// README:end", StringComparison.Ordinal);
        Assert.True(begin >= 0 && end > begin, "ReadmeExample.cs marks its README region");
        string region = source[(source.IndexOf('\n', begin) + 1)..end];

        Assert.Equal(Normalize(region), Normalize(block.Groups["code"].Value));
        Assert.InRange(Normalize(region).Split('\n').Length, 5, 15);
    }

    [Fact]
    public async Task TheReadmesDiExampleServesAVolumeAndReportsHealthy()
    {
        using IHost host = await ReadmeExample.StartAsync(_dir);
        string socket = Path.Combine(_dir, "vol0.sock");

        await HostFixture.WriteAndReadBackAsync(socket, 0, seed: 42);
        Assert.Equal(HealthStatus.Healthy, (await host.Services.GetRequiredService<HealthCheckService>().CheckHealthAsync()).Status);

        await host.StopAsync();
        Assert.False(File.Exists(socket));
    }

    private static string Normalize(string code)
        => string.Join('\n', code.Split('\n').Select(l => string.Join(' ', l.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries))).Where(l => l.Length > 0));

    [GeneratedRegex(@"```csharp\n(?<code>.*?)```", RegexOptions.Singleline)]
    private static partial Regex CodeBlock();
}
