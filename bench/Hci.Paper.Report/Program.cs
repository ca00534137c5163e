using Hci.Paper.Report;

// hci-paper-report: the last step of bench/paper. Reads the CSVs and meta.json that the script wrote into DIR and
// writes beside them one PNG per figure (fig3.png ... fig6.png) and report.md, which sets each figure next to what
// the paper reported.
if (args.Length != 1 || args[0] is "-h" or "--help")
{
    Console.Error.WriteLine("usage: hci-paper-report DIR    (DIR holds meta.json, fig3.csv, fig4.csv, fig5.csv, fig6-fifo.csv, fig6-hybrid.csv)");
    return args.Length == 1 ? 0 : 2;
}

try
{
    foreach (string file in PaperReport.Generate(args[0]))
    {
        Console.WriteLine($"hci-paper-report: wrote {file}");
    }

    return 0;
}
catch (Exception e) when (e is IOException or FormatException or UnauthorizedAccessException)
{
    Console.Error.WriteLine($"hci-paper-report: {e.Message}");
    return 1;
}
