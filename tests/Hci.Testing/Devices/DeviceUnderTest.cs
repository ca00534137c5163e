using Hci.Core.Blocks;

namespace Hci.Testing;

/// <summary>
/// A device made fresh for one test, with whatever it stands on (a temporary file, a back-end, a daemon) and
/// the means to take all of it down again.
/// </summary>
public sealed class DeviceUnderTest : IAsyncDisposable
{
    private readonly Func<ValueTask>? _cleanUp;

    /// <summary>Wraps a device.</summary>
    /// <param name="device">The device the test drives.</param>
    /// <param name="backing">The device behind a front-end, where the test can look at it directly; null if none.</param>
    /// <param name="cleanUp">What to do after the device is disposed (stop a back-end, delete a file); null if nothing.</param>
    public DeviceUnderTest(BlockDevice device, BlockDevice? backing = null, Func<ValueTask>? cleanUp = null)
    {
        Device = device;
        Backing = backing;
        _cleanUp = cleanUp;
    }

    /// <summary>The device the test drives.</summary>
    public BlockDevice Device { get; }

    /// <summary>The device behind a front-end, where the test can look behind it; null where there is none or it is out of reach.</summary>
    public BlockDevice? Backing { get; }

    /// <summary>A device over a fresh file that takes O_DIRECT; the file goes with it.</summary>
    /// <param name="open">Opens the device at the path it is given.</param>
    /// <returns>The device.</returns>
    public static DeviceUnderTest OverTempFile(Func<string, BlockDevice> open)
    {
        string path = TempFiles.DirectIoPath();
        try
        {
            return new DeviceUnderTest(open(path), cleanUp: () =>
            {
                File.Delete(path);
                return ValueTask.CompletedTask;
            });
        }
        catch
        {
            File.Delete(path);
            throw;
        }
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        await Device.DisposeAsync();
        if (_cleanUp != null)
        {
            await _cleanUp();
        }
    }
}
