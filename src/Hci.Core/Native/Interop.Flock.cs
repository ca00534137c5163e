using System.Runtime.InteropServices;

namespace Hci.Core.Native;

/// <summary>flock(2), which Tmds.LibC does not declare: the local cluster store's lock file.</summary>
internal static partial class Interop
{
    internal const int LOCK_SH = 1;
    internal const int LOCK_EX = 2;
    internal const int LOCK_NB = 4;
    internal const int LOCK_UN = 8;

    [LibraryImport("libc", EntryPoint = "flock", SetLastError = true)]
    internal static partial int Flock(int fd, int operation);
}
