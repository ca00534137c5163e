using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Hci.Paper.Report;

/// <summary>Writes the PNGs and report.md for one bench/paper run directory.</summary>
internal static class PaperReport
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>Draws every figure whose CSV is in <paramref name="dir"/> and writes report.md; returns the files written.</summary>
    public static IReadOnlyList<string> Generate(string dir)
    {
        var meta = ReadMeta(Path.Combine(dir, "meta.json"));
        var written = new List<string>();
        var md = new StringBuilder();
        md.AppendLine("# The paper's Figs. 3 to 6, reproduced on this machine");
        md.AppendLine();
        md.AppendLine(Inv, $"Made by `{Get(meta, "command", "bench/paper")}` on {Get(meta, "date", "?")} ({Get(meta, "mode", "?")} run, {Get(meta, "wall_s", "?")} s wall time).");
        md.AppendLine(Inv, $"Machine: {Get(meta, "machine", "?")}. Backing: {Get(meta, "backing", "?")}.");
        md.AppendLine();
        md.AppendLine("These are **relative** results: the paper ran KVM guests on a 36-core Xeon with Intel P3700 NVMe SSDs; here");
        md.AppendLine("clients, controllers and the device share one small virtual machine, no guest runs, and the VM's I/O");
        md.AppendLine("virtualization cost is emulated (a fixed delay per I/O, the paper's own measurement), so compare shapes and");
        md.AppendLine("ratios with the paper, not absolute figures. Each figure's CSV lies beside its PNG. The paper's numbers");
        md.AppendLine("below are those its text states (the source is summarized in docs/paper/SUMMARY.md).");
        md.AppendLine();

        var fig3 = Csv.TryRead(Path.Combine(dir, "fig3.csv"));
        md.AppendLine("## Fig. 3: QD1 latency and where it goes");
        md.AppendLine();
        if (fig3 == null)
        {
            md.AppendLine("Not measured in this run (no fig3.csv).");
        }
        else
        {
            Figures.Fig3(fig3, Path.Combine(dir, "fig3.png"));
            written.Add(Path.Combine(dir, "fig3.png"));
            md.AppendLine("![Fig. 3](fig3.png)");
            md.AppendLine();
            md.AppendLine(Inv, $"**Measured**: 4 KiB random reads and writes at QD1 on one file (O_DIRECT), mean latency. *VM-type*: an iSCSI");
            md.AppendLine("initiator (libiscsi's `iscsi-perf` for reads, `qemu-img bench` over QEMU's libiscsi driver for writes, as");
            md.AppendLine("`tests/rigs/iscsi/perf` runs them; latency = 1 / IOPS at QD1) through `hci-vmtype`. *Host-type*: the vhost-user");
            md.AppendLine("path, `hci-bench --ioengine=vhost-user` through `hci-hosttype`, plus the VM's I/O virtualization cost, which is");
            md.AppendLine(Inv, $"**not measured here but added as the paper measured it** ({Get(meta, "vm_overhead_read_us", "18")} µs read, {Get(meta, "vm_overhead_write_us", "16")} µs write; `--vm-overhead-us`). The VM-type gets the same");
            md.AppendLine("cost once, for the user VM's side; the controller VM's own exits (the paper's second context switch) are not");
            md.AppendLine("emulated, so the VM-type bar is a lower bound. *Container*: the same vhost-user client with no virtualization.");
            md.AppendLine("*Device*: `hci-bench --ioengine=io_uring` on the same file; the rest of each bar is client, transport and controller.");
            md.AppendLine();
            md.AppendLine("| path | op | device µs | client + transport µs | virtualization µs (emulated) | total µs |");
            md.AppendLine("|---|---|---:|---:|---:|---:|");
            for (int r = 0; r < fig3.Count; r++)
            {
                md.AppendLine(Inv, $"| {fig3.Text(r, "path")} | {fig3.Text(r, "op")} | {fig3.Number(r, "device_us"):F1} | {fig3.Number(r, "client_transport_us"):F1} | {fig3.Number(r, "virtualization_us"):F1} | {fig3.Number(r, "total_us"):F1} |");
            }

            md.AppendLine();
            md.AppendLine(Inv, $"Here: {Fig3Ratio(fig3, "read")}; {Fig3Ratio(fig3, "write")}.");
            md.AppendLine();
            var stages = Csv.TryRead(Path.Combine(dir, "fig3-stages.csv"));
            if (stages != null && stages.Count > 0)
            {
                string[] names = ["FrontEnd", "Scheduler", "Throttle", "Device", "Completion"];
                md.AppendLine("**Inside the controller**, from its own per-stage record (`RequestStages`, printed by the host when it");
                md.AppendLine("stops; µs per request, mean): front-end = the virtqueue pop or iSCSI command to the submission, device =");
                md.AppendLine("submission to the device's completion, completion = until the answer is out (used ring and interrupt, or");
                md.AppendLine("the iSCSI response queued). The rest of the client's latency is the client, the transport and the wake-ups.");
                md.AppendLine();
                md.AppendLine("| path | op | " + string.Join(" | ", names.Select(n => n.ToLowerInvariant() + " µs")) + " | in the controller µs |");
                md.AppendLine("|---|---|" + string.Concat(Enumerable.Repeat("---:|", names.Length + 1)));
                foreach (var key in Enumerable.Range(0, stages.Count).Select(r => (Path: stages.Text(r, "path"), Op: stages.Text(r, "op"))).Distinct())
                {
                    double[] us = names.Select(n => Enumerable.Range(0, stages.Count)
                        .Where(r => stages.Text(r, "path") == key.Path && stages.Text(r, "op") == key.Op && stages.Text(r, "stage") == n)
                        .Select(r => stages.Number(r, "us")).Sum()).ToArray();
                    md.AppendLine(Inv, $"| {key.Path} | {key.Op} | {string.Join(" | ", us.Select(u => u.ToString("F1", Inv)))} | {us.Sum():F1} |");
                }

                md.AppendLine();
            }

            md.AppendLine("**Paper**: the VM-to-controller part is about 3x longer in the VM-type than in the host-type (two context");
            md.AppendLine("switches and TCP/iSCSI against one); the controller-to-SSD part is the SSD itself, read about 99 µs and write");
            md.AppendLine("about 20 µs; in the host-type, I/O virtualization costs 18 µs (read) and 16 µs (write), so for writes it");
            md.AppendLine("about doubles the latency.");
        }

        md.AppendLine();
        var fig4 = Csv.TryRead(Path.Combine(dir, "fig4.csv"));
        md.AppendLine("## Fig. 4: IOPS at QD128 against the number of VMs");
        md.AppendLine();
        if (fig4 == null)
        {
            md.AppendLine("Not measured in this run (no fig4.csv).");
        }
        else
        {
            Figures.Fig4(fig4, Path.Combine(dir, "fig4.png"));
            written.Add(Path.Combine(dir, "fig4.png"));
            md.AppendLine("![Fig. 4](fig4.png)");
            md.AppendLine();
            md.AppendLine("**Measured**: N clients at once, each reading 4 KiB at random at QD128 on its own session or socket, total");
            md.AppendLine("IOPS. QEMU guests run only under TCG here (no KVM), far too slow to stand for VMs, so **each VM is a client");
            md.AppendLine("process**: `iscsi-perf -m 128` per VM-type client, `hci-bench --ioengine=vhost-user --iodepth=128` per host-type");
            md.AppendLine("client (one socket each). Each panel is one device behind both controllers: the backing file, and Hci's null");
            md.AppendLine("device (no device time, so the controllers, their CPU budget and the clients are all that is measured; the paper's");
            md.AppendLine("SSDs were faster than its controllers, a small machine's virtual disk is not). The paper's controller VM had 4 vCPUs on a 36-core host;");
            md.AppendLine(Inv, $"here `hci-vmtype` is confined to {Get(meta, "vmtype_cpus", "one CPU")} with `taskset` (its reactor count follows the CPUs it");
            md.AppendLine("may run on), a fixed share of the machine like the CVM's, while `hci-hosttype` runs as a host component on");
            md.AppendLine("every CPU. The clients themselves share the same CPUs, so both curves flatten early on a 2-vCPU machine.");
            md.AppendLine();
            md.AppendLine("| device | clients | VM-type IOPS | host-type IOPS | host / VM |");
            md.AppendLine("|---|---:|---:|---:|---:|");
            for (int r = 0; r < fig4.Count; r++)
            {
                double vm = fig4.Number(r, "vmtype_iops"), host = fig4.Number(r, "hosttype_iops");
                md.AppendLine(Inv, $"| {fig4.Text(r, "device")} | {fig4.Number(r, "clients"):F0} | {vm:F0} | {host:F0} | {(vm > 0 ? (host / vm).ToString("F2", Inv) : "-")} |");
            }

            md.AppendLine();
            foreach (string device in Enumerable.Range(0, fig4.Count).Select(r => fig4.Text(r, "device")).Distinct())
            {
                var rows = Enumerable.Range(0, fig4.Count).Where(r => fig4.Text(r, "device") == device).ToArray();
                int first = rows[0], last = rows[^1];
                md.AppendLine(Inv, $"Here ({device}): with {fig4.Number(first, "clients"):F0} client the host-type does {fig4.Number(first, "hosttype_iops") / Math.Max(1, fig4.Number(first, "vmtype_iops")):F1}x the VM-type's IOPS; from {fig4.Number(first, "clients"):F0} to {fig4.Number(last, "clients"):F0} clients the VM-type goes {fig4.Number(last, "vmtype_iops") / Math.Max(1, fig4.Number(first, "vmtype_iops")):F2}x and the host-type {fig4.Number(last, "hosttype_iops") / Math.Max(1, fig4.Number(first, "hosttype_iops")):F2}x.");
                md.AppendLine();
            }

            md.AppendLine("**Paper**: host-type gives over 3x the IOPS of VM-type with 1 VM (248K IOPS of 4 KiB reads for 1 VM) and");
            md.AppendLine("scales with the number of VMs; VM-type stops scaling at 4 VMs, bound by the controller VM's 4 vCPUs.");
        }

        md.AppendLine();
        var fig5 = Csv.TryRead(Path.Combine(dir, "fig5.csv"));
        md.AppendLine("## Fig. 5: container against VM over queue depth");
        md.AppendLine();
        if (fig5 == null)
        {
            md.AppendLine("Not measured in this run (no fig5.csv).");
        }
        else
        {
            Figures.Fig5(fig5, Path.Combine(dir, "fig5.png"));
            written.Add(Path.Combine(dir, "fig5.png"));
            md.AppendLine("![Fig. 5](fig5.png)");
            md.AppendLine();
            md.AppendLine("**Measured**: the solo phases of `hci-bench contention --sweep` (FIFO run): a container-class load issuing");
            md.AppendLine("4 KiB random reads straight to the controller's queue, and a VM-class load alone on the same queue with the");
            md.AppendLine(Inv, $"virtualization cost emulated as a delay of {Get(meta, "contention_overhead_us", "9")} µs before and after each I/O (so {Get(meta, "vm_overhead_read_us", "18")} µs per I/O, the paper's");
            md.AppendLine("read cost), QD 1 to 128. Reads only: `contention` does not write, and no VM-class write load exists yet.");
            md.AppendLine();
            md.AppendLine("| QD | container IOPS | VM IOPS | container mean µs | VM mean µs |");
            md.AppendLine("|---:|---:|---:|---:|---:|");
            for (int r = 0; r < fig5.Count; r++)
            {
                md.AppendLine(Inv, $"| {fig5.Number(r, "iodepth"):F0} | {fig5.Number(r, "container_iops"):F0} | {fig5.Number(r, "vm_iops"):F0} | {fig5.Number(r, "container_mean_us"):F1} | {fig5.Number(r, "vm_mean_us"):F1} |");
            }

            md.AppendLine();
            md.AppendLine("**Paper**: with Docker containers given the VM's resources, QD 1 to 128: with no I/O virtualization the");
            md.AppendLine("container's write latency at low QD is about half the VM's and equal to the bare SSD's; IOPS are better too.");
        }

        md.AppendLine();
        var fifo = Csv.TryRead(Path.Combine(dir, "fig6-fifo.csv"));
        var hybrid = Csv.TryRead(Path.Combine(dir, "fig6-hybrid.csv"));
        md.AppendLine("## Fig. 6: VM and container together, FIFO against Hybrid");
        md.AppendLine();
        if (fifo == null)
        {
            md.AppendLine("Not measured in this run (no fig6-fifo.csv).");
        }
        else
        {
            Figures.Fig6(fifo, hybrid, Path.Combine(dir, "fig6.png"));
            written.Add(Path.Combine(dir, "fig6.png"));
            md.AppendLine("![Fig. 6](fig6.png)");
            md.AppendLine();
            md.AppendLine("**Measured**: `hci-bench contention --sweep --scheduler fifo` and `--scheduler hybrid` on the same file: the");
            md.AppendLine("container-class and the VM-class loads of Fig. 5 each alone, then together on one scheduled queue, at QD 1");
            md.AppendLine("to 128 each. Hollow markers: alone; squares and dashes: together under FIFO; filled circles: together under");
            md.AppendLine("Hybrid (the paper's proposed scheduler, which Hci implements).");
            md.AppendLine();
            md.AppendLine("| QD | container kept, FIFO | container kept, Hybrid | VM IOPS together, FIFO | VM IOPS together, Hybrid | total IOPS FIFO | total IOPS Hybrid |");
            md.AppendLine("|---:|---:|---:|---:|---:|---:|---:|");
            for (int r = 0; r < fifo.Count; r++)
            {
                int h = hybrid == null ? -1 : Enumerable.Range(0, hybrid.Count).FirstOrDefault(i => hybrid.Number(i, "iodepth") == fifo.Number(r, "iodepth"), -1);
                string Kept(Csv c, int i) => i < 0 ? "-" : (c.Number(i, "container_iops") / Math.Max(1, c.Number(i, "solo_container_iops"))).ToString("P0", Inv);
                string Val(Csv? c, int i, string col) => c == null || i < 0 ? "-" : c.Number(i, col).ToString("F0", Inv);
                string Total(Csv? c, int i) => c == null || i < 0 ? "-" : (c.Number(i, "container_iops") + c.Number(i, "vm_iops")).ToString("F0", Inv);
                md.AppendLine(Inv, $"| {fifo.Number(r, "iodepth"):F0} | {Kept(fifo, r)} | {(hybrid == null ? "-" : Kept(hybrid, h))} | {Val(fifo, r, "vm_iops")} | {Val(hybrid, h, "vm_iops")} | {Total(fifo, r)} | {Total(hybrid, h)} |");
            }

            md.AppendLine();
            if (hybrid != null)
            {
                double[] keptFifo = Enumerable.Range(0, fifo.Count).Select(i => fifo.Number(i, "container_iops") / Math.Max(1, fifo.Number(i, "solo_container_iops"))).ToArray();
                double[] keptHybrid = Enumerable.Range(0, hybrid.Count).Select(i => hybrid.Number(i, "container_iops") / Math.Max(1, hybrid.Number(i, "solo_container_iops"))).ToArray();
                var totals = Enumerable.Range(0, hybrid.Count)
                    .Select(i => (Qd: hybrid.Number(i, "iodepth"), Hybrid: hybrid.Number(i, "container_iops") + hybrid.Number(i, "vm_iops"), Fifo: Enumerable.Range(0, fifo.Count).Where(j => fifo.Number(j, "iodepth") == hybrid.Number(i, "iodepth")).Select(j => fifo.Number(j, "container_iops") + fifo.Number(j, "vm_iops")).FirstOrDefault()))
                    .Where(t => t.Fifo > 0).Select(t => (t.Qd, Ratio: t.Hybrid / t.Fifo)).ToArray();
                md.Append(Inv, $"Here: beside the VM the container kept {keptFifo.Min():P0} to {keptFifo.Max():P0} of its solo IOPS under FIFO and {keptHybrid.Min():P0} to {keptHybrid.Max():P0} under Hybrid");
                if (totals.Length > 0)
                {
                    var worst = totals.MinBy(t => t.Ratio);
                    md.Append(Inv, $"; the device's total under Hybrid was {totals.Min(t => t.Ratio):P0} to {totals.Max(t => t.Ratio):P0} of FIFO's (lowest at QD{worst.Qd:F0}), the price being the VM's IOPS, which Hybrid throttles while the container presses");
                }

                md.AppendLine(". Short phases (1 s in a quick run, 5 s in a full one) move by tens of percent from one run to the next on this machine.");
                md.AppendLine();
            }

            md.AppendLine("**Paper** (FIFO only; its scheduler was future work): a VM and a container reading the same SSD at once, QD 1");
            md.AppendLine("to 128: from QD32 up both suffer; the VM loses latency (its I/O waits behind the container's fast, deep");
            md.AppendLine("queue), the container loses IOPS, by exactly the VM's IOPS.");
        }

        md.AppendLine();
        md.AppendLine("## Commands");
        md.AppendLine();
        md.AppendLine("```sh");
        if (meta.TryGetValue("commands", out var commands) && commands.ValueKind == JsonValueKind.Array)
        {
            foreach (var c in commands.EnumerateArray())
            {
                md.AppendLine(c.GetString());
            }
        }

        md.AppendLine("```");
        if (meta.TryGetValue("notes", out var notes) && notes.ValueKind == JsonValueKind.Array && notes.GetArrayLength() > 0)
        {
            md.AppendLine();
            md.AppendLine("## Notes from the run");
            md.AppendLine();
            foreach (var n in notes.EnumerateArray())
            {
                md.AppendLine(Inv, $"- {n.GetString()}");
            }
        }

        string report = Path.Combine(dir, "report.md");
        File.WriteAllText(report, md.ToString());
        written.Add(report);
        return written;
    }

    private static string Fig3Ratio(Csv csv, string op)
    {
        double Part(string path)
        {
            int r = Enumerable.Range(0, csv.Count).FirstOrDefault(i => csv.Text(i, "path") == path && csv.Text(i, "op") == op, -1);
            return r < 0 ? double.NaN : csv.Number(r, "client_transport_us") + csv.Number(r, "virtualization_us");
        }

        double vm = Part("vm-type"), host = Part("host-type");
        return double.IsNaN(vm) || double.IsNaN(host) || host <= 0
            ? $"{op}: -"
            : $"{op}, the part before the device is {vm / host:F1}x as long in the VM-type as in the host-type";
    }

    private static Dictionary<string, JsonElement> ReadMeta(string path)
    {
        if (!File.Exists(path))
        {
            return [];
        }

        using var doc = JsonDocument.Parse(File.ReadAllText(path));
        return doc.RootElement.EnumerateObject().ToDictionary(p => p.Name, p => p.Value.Clone());
    }

    private static string Get(Dictionary<string, JsonElement> meta, string key, string fallback) =>
        meta.TryGetValue(key, out var v) ? (v.ValueKind == JsonValueKind.String ? v.GetString() ?? fallback : v.GetRawText()) : fallback;
}
