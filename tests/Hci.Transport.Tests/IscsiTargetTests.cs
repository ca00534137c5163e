using System.Diagnostics;
using Hci.Core.Devices;
using Hci.Transport.Iscsi;
using Hci.Transport.Scsi;

namespace Hci.Transport.Tests;

/// <summary>
/// The iSCSI target against libiscsi, an initiator written without it: its conformance suite on the suites this
/// target passes today, discovery, and CHAP (wrong secret refused, mutual CHAP accepted).
/// </summary>
public sealed class IscsiTargetTests
{
    private const string Iqn = "iqn.2026-11.org.hci.test:disk";

    private static async Task<(IscsiTarget Target, MemoryBlockDevice Device)> Start(Action<IscsiTargetOptions>? configure = null)
    {
        var device = new MemoryBlockDevice(64 << 20);
        var options = new IscsiTargetOptions { Portal = "127.0.0.1:0", TargetName = Iqn };
        configure?.Invoke(options);
        var target = new IscsiTarget(options, new Dictionary<int, ScsiDisk> { [1] = new ScsiDisk(device, "test-disk") });
        target.Start();
        await Task.Yield();
        return (target, device);
    }

    private static async Task<(int ExitCode, string Output)> Run(string tool, IEnumerable<string> args, IDictionary<string, string>? environment = null)
    {
        var psi = new ProcessStartInfo(tool) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in args)
        {
            psi.ArgumentList.Add(a);
        }

        foreach (var (k, v) in environment ?? new Dictionary<string, string>())
        {
            psi.Environment[k] = v;
        }

        Process p;
        try
        {
            p = Process.Start(psi)!;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new InvalidOperationException($"{tool} is not installed (Debian: libiscsi-bin); .ci/run installs it.", e);
        }

        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        var stdout = p.StandardOutput.ReadToEndAsync(timeout.Token);
        var stderr = p.StandardError.ReadToEndAsync(timeout.Token);
        await p.WaitForExitAsync(timeout.Token);
        return (p.ExitCode, await stdout + await stderr);
    }

    private static string Url(IscsiTarget t) => $"iscsi://127.0.0.1:{t.LocalEndPoint.Port}/{Iqn}/1";

    [Fact]
    public async Task LibiscsisConformanceSuitesThatThisTargetCoversPass()
    {
        var (target, device) = await Start();
        await using (target)
        {
            using (device)
            {
                string suites = "ALL.TestUnitReady,ALL.Inquiry,ALL.ReadCapacity10,ALL.ReadCapacity16,ALL.Read6,ALL.Read10,ALL.Read16,ALL.Write10,ALL.Write16,ALL.Verify10,ALL.WriteVerify16,ALL.Unmap,ALL.ModeSense6,ALL.iSCSIcmdsn,ALL.iSCSIResiduals,"
                    + "ALL.Read12,ALL.Write12,ALL.Verify12,ALL.Verify16,ALL.WriteVerify10,ALL.WriteVerify12,ALL.WriteSame10.Simple,ALL.WriteSame10.BeyondEol,ALL.WriteSame10.ZeroBlocks,ALL.WriteSame10.WriteProtect,ALL.WriteSame10.Unmap,ALL.WriteSame10.UnmapVPD,ALL.WriteSame10.Check,ALL.WriteSame16,ALL.CompareAndWrite,ALL.OrWrite,"
                    + "ALL.Prefetch10,ALL.Prefetch16,ALL.GetLBAStatus.Simple,ALL.GetLBAStatus.BeyondEol,ALL.ReadDefectData10,ALL.ReadDefectData12,ALL.ReportSupportedOpcodes,"
                    + "ALL.PrinReadKeys,ALL.PrinServiceactionRange,ALL.PrinReportCapabilities,ALL.ProutRegister,ALL.ProutReserve,ALL.ProutClear,ALL.ProutPreempt,ALL.Reserve6";
                // WriteSame10.UnmapUntilEnd is left out: this libiscsi (1.19) sends a block of 0xFF with UNMAP set and
                // expects zeros back. The unit writes the pattern instead (unmapping would answer GOOD and lose the
                // data); libiscsi upstream changed the test to send zeros (sahlberg/libiscsi#318).
                var (code, output) = await Run("iscsi-test-cu", ["--dataloss", $"--test={suites}", Url(target)]);
                Assert.True(code == 0, output[Math.Max(0, output.Length - 4000)..]);
                Assert.Contains("Run Summary", output);
            }
        }
    }

    [Fact]
    public async Task DiscoveryListsTheTargetAndItsLun()
    {
        var (target, device) = await Start();
        await using (target)
        {
            using (device)
            {
                var (code, output) = await Run("iscsi-ls", ["-s", $"iscsi://127.0.0.1:{target.LocalEndPoint.Port}"]);
                Assert.True(code == 0, output);
                Assert.Contains($"Target:{Iqn}", output);
                Assert.Contains("Lun:1", output);
            }
        }
    }

    [Fact]
    public async Task ChapRefusesAWrongSecretAndMutualChapWorks()
    {
        var (target, device) = await Start(o =>
        {
            o.ChapUser = "alice";
            o.ChapSecret = "alice-secret-12";
            o.MutualChapUser = "target";
            o.MutualChapSecret = "target-secret-1";
        });
        await using (target)
        {
            using (device)
            {
                var none = await Run("iscsi-inq", [Url(target)]);
                Assert.NotEqual(0, none.ExitCode);

                var wrong = await Run("iscsi-inq", [Url(target)], new Dictionary<string, string> { ["LIBISCSI_CHAP_USERNAME"] = "alice", ["LIBISCSI_CHAP_PASSWORD"] = "wrong-secret-1" });
                Assert.NotEqual(0, wrong.ExitCode);

                var right = await Run("iscsi-inq", [Url(target)], new Dictionary<string, string> { ["LIBISCSI_CHAP_USERNAME"] = "alice", ["LIBISCSI_CHAP_PASSWORD"] = "alice-secret-12" });
                Assert.True(right.ExitCode == 0, right.Output);
                Assert.Contains("DIRECT_ACCESS", right.Output);

                var mutual = await Run("iscsi-inq", [Url(target)], new Dictionary<string, string>
                {
                    ["LIBISCSI_CHAP_USERNAME"] = "alice",
                    ["LIBISCSI_CHAP_PASSWORD"] = "alice-secret-12",
                    ["LIBISCSI_CHAP_TARGET_USERNAME"] = "target",
                    ["LIBISCSI_CHAP_TARGET_PASSWORD"] = "target-secret-1",
                });
                Assert.True(mutual.ExitCode == 0, mutual.Output);

                var mutualWrong = await Run("iscsi-inq", [Url(target)], new Dictionary<string, string>
                {
                    ["LIBISCSI_CHAP_USERNAME"] = "alice",
                    ["LIBISCSI_CHAP_PASSWORD"] = "alice-secret-12",
                    ["LIBISCSI_CHAP_TARGET_USERNAME"] = "target",
                    ["LIBISCSI_CHAP_TARGET_PASSWORD"] = "not-the-secret",
                });
                Assert.NotEqual(0, mutualWrong.ExitCode);
            }
        }
    }
}
