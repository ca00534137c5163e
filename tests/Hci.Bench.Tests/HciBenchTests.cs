using System.Text.Json;
using Hci.Bench;

namespace Hci.Bench.Tests;

public sealed class HciBenchTests
{
    private static (int Code, string Output, string Log) Run(params string[] args)
    {
        var options = BenchOptions.Parse(args);
        var output = new StringWriter();
        var log = new StringWriter();
        int code = BenchRunner.Run(options, output, log);
        return (code, output.ToString(), log.ToString());
    }

    [Fact]
    public void JsonOutputFollowsFiosLayoutForSharedFieldsAndAddsTheHciObject()
    {
        var (code, output, _) = Run("--ioengine=null", "--size=64m", "--rw=randread", "--iodepth=8", "--runtime=300ms", "--time_based", "--output-format=json");
        Assert.Equal(0, code);
        using var doc = JsonDocument.Parse(output);
        var job = doc.RootElement.GetProperty("jobs")[0];
        var read = job.GetProperty("read");
        Assert.True(read.GetProperty("iops").GetDouble() > 0);
        Assert.True(read.GetProperty("lat_ns").GetProperty("mean").GetDouble() > 0);
        Assert.True(read.GetProperty("clat_ns").GetProperty("percentile").GetProperty("99.000000").GetInt64() > 0);
        Assert.Equal(0, job.GetProperty("write").GetProperty("total_ios").GetInt64());
        var hci = doc.RootElement.GetProperty("hci");
        Assert.True(hci.GetProperty("cpu_ns_per_io").GetDouble() > 0);
        Assert.True(hci.TryGetProperty("alloc_bytes_per_io", out _));
    }

    [Fact]
    public void VerifyChecksReadsOfWrittenBlocksAgainstTheirLastWriteAndPassesOnADeviceThatKeepsItsData()
    {
        var (code, _, log) = Run("--ioengine=memory", "--size=4m", "--offset=1m", "--rw=randrw", "--iodepth=8", "--numjobs=2", "--runtime=300ms", "--time_based", "--verify=crc32c");
        Assert.True(code == 0, log);
        var match = System.Text.RegularExpressions.Regex.Match(log, @"verify: (\d+) reads checked against this run's writes, all good");
        Assert.True(match.Success, log);
        Assert.True(long.Parse(match.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) > 0, log);
    }

    [Fact]
    public void VerifyFailsTheRunWhenTheDeviceDoesNotKeepWhatWasWritten()
    {
        // The null device acknowledges writes and reads back nothing of them.
        var (code, _, log) = Run("--ioengine=null", "--size=1m", "--rw=randrw", "--iodepth=4", "--runtime=2s", "--time_based", "--verify=crc32c");
        Assert.Equal(1, code);
        Assert.Contains("verify: block", log, StringComparison.Ordinal);
        Assert.Contains("FAILED", log, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("--rw=randread")]
    [InlineData("--offset=1000")]
    public void VerifyAndOffsetRefuseWhatTheyCannotDo(string bad)
    {
        var e = Assert.Throws<BenchUsageException>(() => BenchOptions.Parse(["--ioengine=memory", "--size=4m", "--rw=randwrite", "--verify=crc32c", bad]));
        Assert.Contains(bad.Split('=')[0].TrimStart('-'), e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void RandomMixedIoOnAFreshFileIsLaidOutFirstAndReportsBothDirections()
    {
        string path = Path.Combine("/var/tmp", $"hci-bench-test-{Guid.NewGuid():N}.img");
        try
        {
            var (code, output, log) = Run($"--filename={path}", "--size=8m", "--rw=randrw", "--rwmixread=70", "--iodepth=4", "--runtime=300ms", "--time_based", "--output-format=json");
            Assert.True(code == 0, log);
            Assert.Equal(8 << 20, new FileInfo(path).Length);
            using var doc = JsonDocument.Parse(output);
            var job = doc.RootElement.GetProperty("jobs")[0];
            long reads = job.GetProperty("read").GetProperty("total_ios").GetInt64();
            long writes = job.GetProperty("write").GetProperty("total_ios").GetInt64();
            Assert.True(reads > writes && writes > 0, $"reads {reads}, writes {writes}");
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void ASizeBasedJobStopsAfterItsBytesAndPrintsTheNormalReport()
    {
        var (code, output, _) = Run("--ioengine=memory", "--size=4m", "--rw=write", "--bs=64k", "--iodepth=2", "--numjobs=2");
        Assert.Equal(0, code);
        Assert.Contains("write: IOPS=", output);
        Assert.Contains("bytes allocated per I/O", output);
        Assert.Contains("(128 I/Os measured)", output); // 2 jobs x 4 MiB / 64 KiB
    }

    [Theory]
    [InlineData("--rw=sideways", "--rw=sideways is not supported")]
    [InlineData("--bs=100", "out of range")]
    [InlineData("--iodepth=0", "expected a whole number")]
    [InlineData("--size=12q", "unknown suffix")]
    [InlineData("--ioengine=null", "needs --size")]
    [InlineData("--time_based", "needs --runtime")]
    [InlineData("--frobnicate=1", "unknown option --frobnicate")]
    public void BadOptionsAreRefusedWithAMessageThatSaysWhatToFix(string arg, string message)
    {
        var ex = Assert.Throws<BenchUsageException>(() => BenchOptions.Parse([arg]));
        Assert.Contains(message, ex.Message);
    }

    [Theory]
    [InlineData("4k", 4096)]
    [InlineData("1m", 1 << 20)]
    [InlineData("2GiB", 2L << 30)]
    [InlineData("512", 512)]
    public void SizesTakeFiosSuffixes(string text, long bytes) => Assert.Equal(bytes, BenchOptions.ParseBytes("size", text));
}
