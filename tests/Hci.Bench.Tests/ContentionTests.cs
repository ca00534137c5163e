using System.Text.Json;
using Hci.Bench;

namespace Hci.Bench.Tests;

public sealed class ContentionTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static JsonElement RunContention(string scheduler, string path, string runtime = "0.3", string rounds = "1")
    {
        var options = ContentionOptions.Parse([$"--filename={path}", "--size=16m", $"--runtime={runtime}", $"--rounds={rounds}", "--iodepth=4", $"--scheduler={scheduler}", "--vm-overhead-us=16", "--output-format=json"]);
        var output = new StringWriter();
        Assert.Equal(0, ContentionRunner.Run(options, output, new StringWriter()));
        using var doc = JsonDocument.Parse(output.ToString());
        return doc.RootElement.Clone();
    }

    private static double Get(JsonElement root, string phase, string load, string what)
        => what == "iops" ? root.GetProperty(phase).GetProperty(load).GetProperty("iops").GetDouble() : root.GetProperty(phase).GetProperty(load).GetProperty("lat_ns").GetProperty(what).GetDouble();

    [Theory]
    [InlineData("fifo")]
    [InlineData("hybrid")]
    public void ContentionRunsBothLoadsAloneAndTogetherAndReportsTheIssuesJsonLayout(string scheduler)
    {
        string path = Path.Combine("/var/tmp", $"hci-contention-test-{Guid.NewGuid():N}.img");
        try
        {
            var root = RunContention(scheduler, path);
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
                    Assert.True(l.GetProperty("lat_ns").GetProperty("p99").GetInt64() >= l.GetProperty("lat_ns").GetProperty("mean").GetDouble() * 0.5);
                }
            }

            // Both loads really ran beside each other: the together phase moved I/O for both in the same run.
            Assert.True(Get(root, "together", "container", "iops") + Get(root, "together", "vm", "iops") > 0);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void UnderTheHybridSchedulerTheVmsGiveWayToTheContainerAndUnderFifoTheyDoNot()
    {
        // The paper's claim, live and as ratios (this machine's speed cancels out): with VMs beside it, the
        // container's IOPS and mean latency stay closer to its solo figures under the hybrid scheduler than under
        // FIFO, and the VMs are the ones that give way.
        string path = Path.Combine("/var/tmp", $"hci-contention-test-{Guid.NewGuid():N}.img");
        try
        {
            var fifo = RunContention("fifo", path, runtime: "0.4", rounds: "5");
            var hybrid = RunContention("hybrid", path, runtime: "0.4", rounds: "5");
            double Kept(JsonElement r) => Get(r, "together", "container", "iops") / Get(r, "solo", "container", "iops");
            double Slowed(JsonElement r) => Get(r, "together", "container", "mean") / Get(r, "solo", "container", "mean");
            double VmKept(JsonElement r) => Get(r, "together", "vm", "iops") / Get(r, "solo", "vm", "iops");
            string figures = $"container IOPS kept: hybrid {Kept(hybrid):P0}, fifo {Kept(fifo):P0}; latency together/solo: hybrid {Slowed(hybrid):F2}, fifo {Slowed(fifo):F2}; VM IOPS kept: hybrid {VmKept(hybrid):P0}, fifo {VmKept(fifo):P0}";
            output.WriteLine(figures);

            // Only what the scheduler decides is asserted here: the VMs give way under hybrid (throttled to a small
            // share while the container presses) and not under FIFO. The container's latency and IOPS beside them
            // are timings, which a loaded machine (CI runs test assemblies in parallel) can swing either way: they
            // are printed here, compared by bench/ and asserted on the simulator's virtual clock.
            Assert.True(VmKept(hybrid) < 0.5 * VmKept(fifo), "the VMs do not give way under hybrid: " + figures);
            Assert.True(Kept(hybrid) > 0 && Slowed(hybrid) > 0 && Slowed(fifo) > 0, figures);
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
    [InlineData("--latency-tolerance=-0.1", "expected 0 to 10")]
    [InlineData("--latency-tolerance=NaN", "expected 0 to 10")]
    [InlineData("--latency-tolerance=11", "expected 0 to 10")]
    [InlineData("--pressure-depth=0", "--pressure-depth=0: expected 1 to 1024")]
    [InlineData("--pressure-depth=1025", "--pressure-depth=1025: expected 1 to 1024")]
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
