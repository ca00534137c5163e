using ScottPlot;

namespace Hci.Paper.Report;

/// <summary>Draws the four figures. Every plot names its axes with units and carries a legend.</summary>
internal static class Figures
{
    private const int Width = 1000;
    private const int Height = 560;

    private static readonly Color Device = Color.FromHex("#4c72b0");
    private static readonly Color Transport = Color.FromHex("#dd8452");
    private static readonly Color Virtualization = Color.FromHex("#c44e52");
    private static readonly Color VmColor = Color.FromHex("#c44e52");
    private static readonly Color ContainerColor = Color.FromHex("#4c72b0");
    private static readonly Color HostColor = Color.FromHex("#55a868");

    /// <summary>Fig. 3: QD1 latency per path and operation, stacked by where the time goes.</summary>
    public static void Fig3(Csv csv, string png)
    {
        var plot = new Plot();
        var ticks = new List<(double, string)>();
        double x = 0;
        double top = 0;
        foreach (string op in new[] { "read", "write" })
        {
            foreach (string path in new[] { "vm-type", "host-type", "container" })
            {
                int row = Enumerable.Range(0, csv.Count).FirstOrDefault(r => csv.Text(r, "path") == path && csv.Text(r, "op") == op, -1);
                if (row < 0)
                {
                    continue;
                }

                double device = csv.Number(row, "device_us");
                double transport = csv.Number(row, "client_transport_us");
                double virt = csv.Number(row, "virtualization_us");
                plot.Add.Bars(new[]
                {
                    new Bar { Position = x, ValueBase = 0, Value = device, FillColor = Device },
                    new Bar { Position = x, ValueBase = device, Value = device + transport, FillColor = Transport },
                    new Bar { Position = x, ValueBase = device + transport, Value = device + transport + virt, FillColor = Virtualization },
                });
                var total = plot.Add.Text($"{device + transport + virt:F0}", x, device + transport + virt);
                total.LabelAlignment = Alignment.LowerCenter;
                total.LabelFontSize = 14;
                top = Math.Max(top, device + transport + virt);
                ticks.Add((x, $"{path}\n{op}"));
                x += 1;
            }

            x += 0.6;
        }

        plot.Axes.Bottom.SetTicks(ticks.Select(t => t.Item1).ToArray(), ticks.Select(t => t.Item2).ToArray());
        plot.Axes.SetLimitsY(0, Math.Max(1, top * 1.1));
        plot.Axes.SetLimitsX(-0.7, x - 0.9);
        plot.Title("Fig. 3: 4 KiB random I/O at QD1, mean latency by part");
        plot.YLabel("mean latency (µs)");
        plot.XLabel("path and operation");
        plot.Legend.ManualItems.Add(new LegendItem { LabelText = "device (io_uring on the same file, no front-end)", FillColor = Device });
        plot.Legend.ManualItems.Add(new LegendItem { LabelText = "client + transport + controller (measured end to end, minus device)", FillColor = Transport });
        plot.Legend.ManualItems.Add(new LegendItem { LabelText = "VM I/O virtualization (not measured: added as the paper measured it, --vm-overhead-us)", FillColor = Virtualization });
        plot.ShowLegend(Edge.Bottom);
        Style(plot);
        plot.SavePng(png, Width, Height + 100);
    }

    /// <summary>Fig. 4: total IOPS at QD128 against the number of clients standing in for VMs, one panel per device.</summary>
    public static void Fig4(Csv csv, string png)
    {
        var devices = Enumerable.Range(0, csv.Count).Select(r => csv.Text(r, "device")).Distinct().ToList();
        var multiplot = new Multiplot();
        multiplot.AddPlots(devices.Count);
        multiplot.Layout = new ScottPlot.MultiplotLayouts.Columns();
        for (int d = 0; d < devices.Count; d++)
        {
            var rows = Enumerable.Range(0, csv.Count).Where(r => csv.Text(r, "device") == devices[d]).ToArray();
            double[] clients = rows.Select(r => csv.Number(r, "clients")).ToArray();
            double[] host = rows.Select(r => csv.Number(r, "hosttype_iops") / 1000).ToArray();
            double[] vm = rows.Select(r => csv.Number(r, "vmtype_iops") / 1000).ToArray();
            var plot = multiplot.GetPlot(d);
            bool log = host.Concat(vm).Max() > 8 * Math.Max(0.001, host.Concat(vm).Min());
            Line(plot, clients, log ? Lg(host) : host, "host-type (vhost-user → hci-hosttype)", HostColor, false);
            Line(plot, clients, log ? Lg(vm) : vm, "VM-type (iSCSI → hci-vmtype on 1 CPU)", VmColor, false);
            plot.Axes.Bottom.SetTicks(clients, clients.Select(c => c.ToString("F0", System.Globalization.CultureInfo.InvariantCulture)).ToArray());
            plot.Title($"Fig. 4 ({(char)('a' + d)}): QD128 random reads, {(devices[d] == "null" ? "null device" : "backing file")}");
            plot.XLabel("clients standing in for VMs (processes)");
            plot.YLabel(log ? "total IOPS (thousands, log scale)" : "total IOPS (thousands)");
            if (log)
            {
                LogY(plot);
            }
            else
            {
                FromZero(plot);
            }

            plot.ShowLegend(Edge.Bottom);
            Style(plot);
        }

        multiplot.SavePng(png, devices.Count * Width, Height + 60);
    }

    /// <summary>Fig. 5: container against VM over queue depth, IOPS and latency side by side.</summary>
    public static void Fig5(Csv csv, string png)
    {
        double[] qd = csv.Numbers("iodepth");
        var multiplot = new Multiplot();
        multiplot.AddPlots(2);
        multiplot.Layout = new ScottPlot.MultiplotLayouts.Columns();
        var iops = multiplot.GetPlot(0);
        Line(iops, Log2(qd), csv.Numbers("container_iops").Select(v => v / 1000).ToArray(), "container (no virtualization)", ContainerColor, false);
        Line(iops, Log2(qd), csv.Numbers("vm_iops").Select(v => v / 1000).ToArray(), "VM (emulated virtualization cost)", VmColor, false);
        DepthAxis(iops, qd);
        iops.Title("Fig. 5 (a): IOPS, 4 KiB random reads");
        iops.YLabel("IOPS (thousands)");
        FromZero(iops);
        iops.ShowLegend(Edge.Bottom);
        Style(iops);
        var lat = multiplot.GetPlot(1);
        Line(lat, Log2(qd), Lg(csv.Numbers("container_mean_us")), "container (no virtualization)", ContainerColor, false);
        Line(lat, Log2(qd), Lg(csv.Numbers("vm_mean_us")), "VM (emulated virtualization cost)", VmColor, false);
        DepthAxis(lat, qd);
        lat.Title("Fig. 5 (b): mean latency, 4 KiB random reads");
        lat.YLabel("mean latency (µs, log scale)");
        LogY(lat);
        lat.ShowLegend(Edge.Bottom);
        Style(lat);
        multiplot.SavePng(png, 2 * Width, Height + 60);
    }

    /// <summary>Fig. 6: VM and container together over queue depth, solo against FIFO against Hybrid.</summary>
    public static void Fig6(Csv fifo, Csv? hybrid, string png)
    {
        double[] qd = fifo.Numbers("iodepth");
        var multiplot = new Multiplot();
        multiplot.AddPlots(2);
        multiplot.Layout = new ScottPlot.MultiplotLayouts.Columns();
        var iops = multiplot.GetPlot(0);
        var lat = multiplot.GetPlot(1);
        Line(iops, Log2(qd), K(fifo.Numbers("solo_container_iops")), "container alone", ContainerColor, true);
        Line(iops, Log2(qd), K(fifo.Numbers("container_iops")), "container beside VM, FIFO", ContainerColor, false, LinePattern.Dashed);
        Line(lat, Log2(qd), Lg(fifo.Numbers("solo_container_mean_us")), "container alone", ContainerColor, true);
        Line(lat, Log2(qd), Lg(fifo.Numbers("container_mean_us")), "container beside VM, FIFO", ContainerColor, false, LinePattern.Dashed);
        if (hybrid != null)
        {
            Line(iops, Log2(hybrid.Numbers("iodepth")), K(hybrid.Numbers("container_iops")), "container beside VM, Hybrid", ContainerColor, false);
            Line(lat, Log2(hybrid.Numbers("iodepth")), Lg(hybrid.Numbers("container_mean_us")), "container beside VM, Hybrid", ContainerColor, false);
        }

        Line(iops, Log2(qd), K(fifo.Numbers("solo_vm_iops")), "VM alone", VmColor, true);
        Line(iops, Log2(qd), K(fifo.Numbers("vm_iops")), "VM beside container, FIFO", VmColor, false, LinePattern.Dashed);
        Line(lat, Log2(qd), Lg(fifo.Numbers("solo_vm_mean_us")), "VM alone", VmColor, true);
        Line(lat, Log2(qd), Lg(fifo.Numbers("vm_mean_us")), "VM beside container, FIFO", VmColor, false, LinePattern.Dashed);
        if (hybrid != null)
        {
            Line(iops, Log2(hybrid.Numbers("iodepth")), K(hybrid.Numbers("vm_iops")), "VM beside container, Hybrid", VmColor, false);
            Line(lat, Log2(hybrid.Numbers("iodepth")), Lg(hybrid.Numbers("vm_mean_us")), "VM beside container, Hybrid", VmColor, false);
        }

        DepthAxis(iops, qd);
        iops.Title("Fig. 6 (a): IOPS of each, 4 KiB random reads");
        iops.YLabel("IOPS (thousands)");
        FromZero(iops);
        iops.ShowLegend(Edge.Bottom);
        Style(iops);
        DepthAxis(lat, qd);
        lat.Title("Fig. 6 (b): mean latency of each");
        lat.YLabel("mean latency (µs, log scale)");
        LogY(lat);
        lat.ShowLegend(Edge.Bottom);
        Style(lat);
        multiplot.SavePng(png, 2 * Width, Height + 160);
    }

    private static double[] Lg(double[] values) => values.Select(v => Math.Log10(Math.Max(v, 0.1))).ToArray();

    private static void FromZero(Plot plot)
    {
        plot.Axes.AutoScale();
        var limits = plot.Axes.GetLimits();
        plot.Axes.SetLimitsY(0, Math.Max(1, limits.Top * 1.05));
    }

    /// <summary>A log-scale Y axis for values already given as log10: ticks at 1, 2 and 5 times each power of ten.</summary>
    private static void LogY(Plot plot)
    {
        plot.Axes.AutoScale();
        var limits = plot.Axes.GetLimits();
        double low = Math.Floor(limits.Bottom), high = Math.Ceiling(limits.Top);
        var positions = new List<double>();
        var labels = new List<string>();
        for (double p = low; p <= high; p++)
        {
            foreach (double m in new[] { 1.0, 2.0, 5.0 })
            {
                double v = m * Math.Pow(10, p);
                positions.Add(Math.Log10(v));
                labels.Add(v.ToString(v < 1 ? "0.#" : "#,0", System.Globalization.CultureInfo.InvariantCulture));
            }
        }

        plot.Axes.Left.SetTicks(positions.ToArray(), labels.ToArray());
        plot.Axes.SetLimitsY(low, high);
    }

    private static double[] K(double[] values) => values.Select(v => v / 1000).ToArray();

    private static double[] Log2(double[] depths) => depths.Select(Math.Log2).ToArray();

    private static void DepthAxis(Plot plot, double[] depths)
    {
        plot.Axes.Bottom.SetTicks(Log2(depths), depths.Select(d => d.ToString("F0", System.Globalization.CultureInfo.InvariantCulture)).ToArray());
        plot.XLabel("queue depth (I/Os in flight per load, log scale)");
    }

    private static void Line(Plot plot, double[] xs, double[] ys, string label, Color color, bool hollow, LinePattern? pattern = null)
    {
        var s = plot.Add.Scatter(xs, ys);
        s.LegendText = label;
        s.Color = color;
        s.LineWidth = 2.5f;
        s.MarkerSize = 9;
        s.MarkerShape = hollow ? MarkerShape.OpenCircle : MarkerShape.FilledCircle;
        if (hollow)
        {
            s.LinePattern = LinePattern.Dotted;
        }
        else if (pattern is { } p)
        {
            s.LinePattern = p;
            s.MarkerShape = MarkerShape.FilledSquare;
        }
    }

    private static void Style(Plot plot)
    {
        plot.Axes.Title.Label.FontSize = 20;
        plot.Axes.Bottom.Label.FontSize = 16;
        plot.Axes.Left.Label.FontSize = 16;
        plot.Axes.Bottom.TickLabelStyle.FontSize = 14;
        plot.Axes.Left.TickLabelStyle.FontSize = 14;
        plot.Legend.FontSize = 14;
    }
}
