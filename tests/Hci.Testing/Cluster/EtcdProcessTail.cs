namespace Hci.Testing;

/// <summary>What an etcd process under test shares, whether it runs alone (<see cref="EtcdServer"/>) or as a member of
/// a cluster: the last lines it printed, for failure messages, its health probe, and how it is killed.</summary>
internal sealed class EtcdProcessTail
{
    private const int Lines = 40;
    private readonly Queue<string> _lines = new();

    /// <summary>The last lines, oldest first.</summary>
    public string Text
    {
        get
        {
            lock (_lines)
            {
                return string.Join('\n', _lines);
            }
        }
    }

    /// <summary>Keeps a line (a null line, the end of a stream, is ignored).</summary>
    public void Add(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_lines)
        {
            _lines.Enqueue(line);
            while (_lines.Count > Lines)
            {
                _lines.Dequeue();
            }
        }
    }

    /// <summary>Kills an etcd process with SIGKILL (if it has not exited), waits for it and releases it; null does nothing.</summary>
    public static void Kill(System.Diagnostics.Process? process)
    {
        if (process is null)
        {
            return;
        }

        try
        {
            process.Kill();
        }
        catch (InvalidOperationException)
        {
            // Already exited.
        }

        process.WaitForExit();
        process.Dispose();
    }

    /// <summary>True when the etcd at <paramref name="clientUrl"/> answers its health endpoint as healthy.</summary>
    public static async Task<bool> IsHealthyAsync(HttpClient http, string clientUrl)
    {
        try
        {
            using var response = await http.GetAsync(new Uri($"{clientUrl}/health")).ConfigureAwait(false);
            string text = await response.Content.ReadAsStringAsync().ConfigureAwait(false);
            return response.IsSuccessStatusCode && text.Contains("\"health\":\"true\"", StringComparison.Ordinal);
        }
        catch (HttpRequestException)
        {
            return false;
        }
        catch (TaskCanceledException)
        {
            return false;
        }
    }
}
