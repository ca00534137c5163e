using Hci.Core.Blocks;
using Hci.Core.Native;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Hci.Core.Devices;

/// <summary>Opens devices from <see cref="BlockDeviceOptions"/>, choosing io_uring where the kernel allows it.</summary>
public static class BlockDevices
{
    private static int s_fallbackWarned;

    /// <summary>True when this process can use io_uring.</summary>
    public static bool IsIoUringAvailable => OperatingSystem.IsLinux() && IoUringSupport.Current.IsAvailable;

    /// <summary>Why io_uring cannot be used here, with the fix; null when it can.</summary>
    public static string? IoUringUnavailableReason => OperatingSystem.IsLinux() ? IoUringSupport.Current.UnavailableReason : "io_uring exists only on Linux";

    /// <summary>Opens a device.</summary>
    /// <param name="options">What to open; validated first.</param>
    /// <param name="loggerFactory">For the one warning when <see cref="BlockEngine.Auto"/> falls back to the file engine.</param>
    /// <returns>The device.</returns>
    /// <exception cref="ArgumentException">The options are invalid; the message says what to fix.</exception>
    /// <exception cref="PlatformNotSupportedException"><see cref="BlockEngine.IoUring"/> was asked for where io_uring is unavailable.</exception>
    /// <exception cref="IOException">The file or device cannot be opened.</exception>
    public static BlockDevice Open(BlockDeviceOptions options, ILoggerFactory? loggerFactory = null)
        => OpenWithProbe(options, loggerFactory, OperatingSystem.IsLinux() ? IoUringSupport.Current : null);

    /// <summary>Opens a device as if the kernel's io_uring probe had given <paramref name="support"/> (tests of the fallback).</summary>
    internal static BlockDevice OpenWithProbe(BlockDeviceOptions options, ILoggerFactory? loggerFactory, IoUringSupport? support)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var logger = (loggerFactory ?? NullLoggerFactory.Instance).CreateLogger("Hci.Core.Devices");
        int lbs = options.LogicalBlockSize ?? 4096;
        switch (options.Engine)
        {
            case BlockEngine.Memory:
                return new MemoryBlockDevice(options.Size!.Value, lbs, options.MaxTransferBytes);
            case BlockEngine.Null:
                return new NullBlockDevice(options.Size!.Value, lbs, options.MaxTransferBytes);
        }

        if (!OperatingSystem.IsLinux())
        {
            throw new PlatformNotSupportedException("File-backed Hci devices need Linux.");
        }

        var engine = options.Engine;
        if (engine == BlockEngine.IoUring && !support!.IsAvailable)
        {
            throw new PlatformNotSupportedException($"The io_uring engine cannot start: {support!.UnavailableReason}. Or choose the file engine.");
        }

        if (engine == BlockEngine.Auto)
        {
            if (support!.IsAvailable)
            {
                engine = BlockEngine.IoUring;
            }
            else
            {
                engine = BlockEngine.File;
                if (Interlocked.Exchange(ref s_fallbackWarned, 1) == 0)
                {
                    DevicesLog.FallingBackToFileEngine(logger, support!.UnavailableReason!);
                }
            }
        }

        var file = BackingFile.Open(options);
        try
        {
            return engine == BlockEngine.IoUring
                ? new IoUringBlockDevice(file, options.MaxTransferBytes)
                : new FileBlockDevice(file, options.MaxTransferBytes);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }
}
