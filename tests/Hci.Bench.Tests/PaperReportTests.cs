using Hci.Paper.Report;

namespace Hci.Bench.Tests;

public sealed class PaperReportTests : IDisposable
{
    private static readonly byte[] PngSignature = [0x89, (byte)'P', (byte)'N', (byte)'G', 0x0d, 0x0a, 0x1a, 0x0a];
    private const string ContentionHeader = "iodepth,solo_container_iops,solo_container_mean_us,solo_container_p99_us,solo_vm_iops,solo_vm_mean_us,solo_vm_p99_us,container_iops,container_mean_us,container_p99_us,vm_iops,vm_mean_us,vm_p99_us";

    private readonly string _dir = Path.Combine(Path.GetTempPath(), $"hci-paper-report-{Guid.NewGuid():N}");

    public PaperReportTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void TheReportOfTinyCsvsHasAPngPerFigureAndNamesAllFourFigures()
    {
        Write("meta.json", """{"mode":"fixture","date":"2026-12-02","commands":["bench/paper --quick"],"notes":[]}""");
        Write("fig3.csv", "path,op,device_us,client_transport_us,virtualization_us,total_us", "vm-type,read,40,100,18,158", "host-type,read,40,25,18,83", "container,read,40,25,0,65");
        Write("fig4.csv", "device,clients,vmtype_iops,hosttype_iops", "file,1,50000,60000", "file,2,60000,70000", "null,1,80000,2400000", "null,2,90000,2000000");
        Write("fig5.csv", "iodepth,container_iops,container_mean_us,vm_iops,vm_mean_us", "1,15000,65,13000,75", "2,30000,66,26000,76");
        Write("fig6-fifo.csv", ContentionHeader, "1,15000,65,90,13000,75,100,14000,70,95,12000,80,110", "2,30000,66,90,26000,76,100,20000,99,120,15000,130,150");
        Write("fig6-hybrid.csv", ContentionHeader, "1,15000,65,90,13000,75,100,14500,68,92,12000,80,110", "2,30000,66,90,26000,76,100,29000,68,92,2000,900,1000");

        var written = PaperReport.Generate(_dir);

        foreach (string name in new[] { "fig3.png", "fig4.png", "fig5.png", "fig6.png" })
        {
            string png = Path.Combine(_dir, name);
            Assert.Contains(png, written);
            Assert.Equal(PngSignature, File.ReadAllBytes(png).AsSpan(0, 8).ToArray());
        }

        string report = File.ReadAllText(Path.Combine(_dir, "report.md"));
        foreach (string figure in new[] { "## Fig. 3", "## Fig. 4", "## Fig. 5", "## Fig. 6" })
        {
            Assert.Contains(figure, report, StringComparison.Ordinal);
        }

        Assert.DoesNotContain("Not measured", report, StringComparison.Ordinal);
        Assert.Contains("![Fig. 6](fig6.png)", report, StringComparison.Ordinal);
    }

    [Fact]
    public void AFigureWhoseCsvIsMissingIsReportedAsNotMeasured()
    {
        Write("fig4.csv", "device,clients,vmtype_iops,hosttype_iops", "null,1,50000,150000");

        PaperReport.Generate(_dir);

        Assert.True(File.Exists(Path.Combine(_dir, "fig4.png")));
        Assert.False(File.Exists(Path.Combine(_dir, "fig3.png")));
        Assert.Contains("Not measured in this run (no fig3.csv)", File.ReadAllText(Path.Combine(_dir, "report.md")), StringComparison.Ordinal);
    }

    private void Write(string name, params string[] lines) => File.WriteAllLines(Path.Combine(_dir, name), lines);
}
