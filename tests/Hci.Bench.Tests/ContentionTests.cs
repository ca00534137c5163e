using System.Text.Json;
using Hci.Bench;

namespace Hci.Bench.Tests;

public sealed class ContentionTests
{
    [Theory]
    [InlineData("fifo")]
    [InlineData("hybrid")]
    public void ContentionRunsBothLoadsAloneAndTogetherAndReportsTheIssuesJsonLayout(string scheduler)
    {
        string path = Path.Combine("/var/tmp", $"hci-contention-test-{Guid.NewGuid():N}.img");
        try
        {
            var options = ContentionOptions.Parse([$"--filename={path}", "--size=16m", "--runtime=0.3", "--iodepth=4", $"--scheduler={scheduler}", "--vm-overhead-us=16", "--output-format=json"]);
            var output = new StringWriter();
            Assert.Equal(0, ContentionRunner.Run(options, output, new StringWriter()));
            using var doc = JsonDocument.Parse(output.ToString());
            var root = doc.RootElement;
            Assert.Equal(scheduler, root.GetProperty("scheduler").GetString());
            Assert.Equal(4, root.GetProperty("iodepth").GetInt32());
            foreach (var phase in new[] { "solo", "together" })
            {
                foreach (var load in new[] { "container", "vm" })
                {
                    var l = root.GetProperty(phase).GetProperty(load);
                    Assert.True(l.GetProperty("iops").GetDouble() > 0, $"{phase}.{load} did no I/O");
                    Assert.True(l.GetProperty("lat_ns").GetProperty("mean").GetDouble() > 0);
                    Assert.True(l.GetProperty("lat_ns").GetProperty("p99").GetInt64() > 0);
                }
            }

            // The VM's latency includes its virtualization cost on both sides.
            Assert.True(root.GetProperty("solo").GetProperty("vm").GetProperty("lat_ns").GetProperty("mean").GetDouble() >= 32_000);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Theory]
    [InlineData("--scheduler=wfq", "not supported")]
    [InlineData("--iodepth=0", "expected 1 to 1024")]
    [InlineData("--vm-overhead-us=-1", "expected 0 to 1000000")]
    [InlineData("--runtime=0", "positive number of seconds")]
    public void BadContentionOptionsSayWhatToFix(string arg, string message)
    {
        var ex = Assert.Throws<BenchUsageException>(() => ContentionOptions.Parse([arg]));
        Assert.Contains(message, ex.Message);
    }
}

public sealed class ContentionOptionSpellingTests
{
    [Fact]
    public void AValueGivenAsTheNextArgumentIsNamedInTheError()
    {
        var ex = Assert.Throws<BenchUsageException>(() => ContentionOptions.Parse(["--iodepth", "0"]));
        Assert.Contains("--iodepth=0", ex.Message);
        Assert.Equal(64, ContentionOptions.Parse(["--iodepth", "64"]).IoDepth);
    }
}
