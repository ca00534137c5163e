using Hci.Bench;

if (args.Length > 0 && args[0] == "contention")
{
    try
    {
        return ContentionRunner.Run(ContentionOptions.Parse(args[1..]), Console.Out, Console.Error);
    }
    catch (BenchHelpException help)
    {
        help.Print();
        return 0;
    }
    catch (BenchUsageException ex)
    {
        Console.Error.WriteLine($"hci-bench contention: {ex.Message}");
        return 2;
    }
    catch (Exception ex) when (ex is IOException or ArgumentException or PlatformNotSupportedException)
    {
        Console.Error.WriteLine($"hci-bench contention: {ex.Message}");
        return 1;
    }
}

BenchOptions options;
try
{
    options = BenchOptions.Parse(args);
}
catch (BenchHelpException help)
{
    help.Print();
    return 0;
}
catch (BenchUsageException ex)
{
    Console.Error.WriteLine($"hci-bench: {ex.Message}");
    return 2;
}

string? tempFile = null;
if (options.TemporaryFile)
{
    string dir = Directory.Exists("/var/tmp") ? "/var/tmp" : Path.GetTempPath();
    tempFile = Path.Combine(dir, $"hci-bench-{Environment.ProcessId}.img");
    options.FileName = tempFile;
    if (!options.Json)
    {
        Console.WriteLine($"hci-bench: no --filename given: using a temporary {options.Size >> 20} MiB file {tempFile}");
    }
}

try
{
    return BenchRunner.Run(options, Console.Out, Console.Error);
}
catch (Exception ex) when (ex is IOException or ArgumentException or PlatformNotSupportedException or UnauthorizedAccessException)
{
    Console.Error.WriteLine($"hci-bench: {ex.Message}");
    return 1;
}
finally
{
    if (tempFile != null)
    {
        File.Delete(tempFile);
    }
}
