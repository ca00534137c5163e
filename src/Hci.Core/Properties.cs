using System.Runtime.Versioning;

// Hci's devices stand on Linux (io_uring, O_DIRECT, ioctl); the whole package says so to analyzers.
[assembly: SupportedOSPlatform("linux")]
