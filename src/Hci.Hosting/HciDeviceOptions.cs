namespace Hci.Hosting;

/// <summary>
/// One block device of the host (configuration section <c>Hci:Devices:NAME</c>): opened when the host starts and
/// closed when it stops, after the servers that export it.
/// </summary>
public sealed class HciDeviceOptions
{
    /// <summary>
    /// The engine: <c>io_uring</c>, <c>file</c>, <c>memory</c>, <c>null</c> or <c>auto</c> (io_uring where the
    /// kernel allows it, else the file engine with one warning). <remarks>Default: <c>auto</c>.</remarks>
    /// </summary>
    public string Engine { get; set; } = "auto";

    /// <summary>The regular file or block device behind the device, for the io_uring, file and auto engines (a file
    /// is created at <see cref="Size"/> if missing). <remarks>Default: none.</remarks></summary>
    public string? Path { get; set; }

    /// <summary>
    /// Capacity in bytes, a multiple of the logical block size: required for the memory and null engines and to
    /// create a file; for an existing file or block device a limit below its size.
    /// <remarks>Default: the file's or block device's size.</remarks>
    /// </summary>
    public long? Size { get; set; }

    /// <summary>Bypass the page cache (O_DIRECT). <remarks>Default: true.</remarks></summary>
    public bool Direct { get; set; } = true;

    /// <summary>Refuse writes. <remarks>Default: false.</remarks></summary>
    public bool ReadOnly { get; set; }

    /// <summary>Logical block size in bytes, a power of two from 512 to 65536.
    /// <remarks>Default: the block device's sector size, or 4096 for files, memory and null devices.</remarks></summary>
    public int? LogicalBlockSize { get; set; }

    /// <summary>Largest read or write in bytes, a multiple of the logical block size. <remarks>Default: 1 MiB.</remarks></summary>
    public int MaxTransferBytes { get; set; } = 1 << 20;

    /// <summary>
    /// The scheduler in front of the device: the name of one defined under <c>Hci:Schedulers</c> (see
    /// <see cref="HciBuilderExtensions.AddScheduler(IHciBuilder, string, Microsoft.Extensions.Configuration.IConfiguration)"/>),
    /// or a kind with its default settings: <c>fifo</c>, <c>limits</c>, <c>mclock</c> or <c>hybrid</c>. Each device
    /// gets a scheduler of its own made from those settings. <remarks>Default: none (<c>none</c> or empty).</remarks>
    /// </summary>
    public string? Scheduler { get; set; }
}
