using Hci.Core.Devices;
using Hci.Scheduling;

namespace Hci.Hosting;

/// <summary>The words configuration uses for engines and scheduler kinds.</summary>
internal static class HciNames
{
    public const string Engines = "io_uring, file, memory, null or auto";

    public const string SchedulerKinds = "none, fifo, limits, mclock or hybrid";

    public static bool TryParseEngine(string? text, out BlockEngine engine)
    {
        engine = (text ?? "").Trim().ToLowerInvariant() switch
        {
            "" or "auto" => BlockEngine.Auto,
            "io_uring" or "iouring" or "io-uring" => BlockEngine.IoUring,
            "file" => BlockEngine.File,
            "memory" => BlockEngine.Memory,
            "null" => BlockEngine.Null,
            _ => (BlockEngine)(-1),
        };
        return Enum.IsDefined(engine);
    }

    /// <summary>A kind named directly (not a scheduler defined by name); null kind for "none" or empty.</summary>
    public static bool TryParseSchedulerKind(string? text, out SchedulerKind? kind)
    {
        switch ((text ?? "").Trim().ToLowerInvariant())
        {
            case "" or "none":
                kind = null;
                return true;
            case "fifo":
                kind = SchedulerKind.Fifo;
                return true;
            case "limits":
                kind = SchedulerKind.Limits;
                return true;
            case "mclock":
                kind = SchedulerKind.MClock;
                return true;
            case "hybrid":
                kind = SchedulerKind.Hybrid;
                return true;
            default:
                kind = null;
                return false;
        }
    }
}
