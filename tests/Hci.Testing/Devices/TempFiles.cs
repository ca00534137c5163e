using System.Text;
using Tmds.Linux;

namespace Hci.Testing;

/// <summary>Temporary files for devices that need a real file system under them.</summary>
public static class TempFiles
{
    /// <summary>
    /// A fresh path on a file system that takes O_DIRECT (tmpfs does not): <c>HCI_TEST_DIR</c> if set, else
    /// /var/tmp, the temporary directory or the test's own directory, the first that takes it.
    /// </summary>
    /// <returns>A path that does not exist yet.</returns>
    /// <exception cref="InvalidOperationException">No candidate directory takes O_DIRECT.</exception>
    public static string DirectIoPath()
    {
        foreach (var dir in new[] { Environment.GetEnvironmentVariable("HCI_TEST_DIR"), "/var/tmp", Path.GetTempPath(), AppContext.BaseDirectory })
        {
            if (string.IsNullOrEmpty(dir) || !Directory.Exists(dir))
            {
                continue;
            }

            string probe = Path.Combine(dir, $"hci-test-{Guid.NewGuid():N}.img");
            if (TakesDirectIo(probe))
            {
                return probe;
            }
        }

        throw new InvalidOperationException("No directory here takes O_DIRECT; set HCI_TEST_DIR.");
    }

    private static unsafe bool TakesDirectIo(string path)
    {
        var bytes = Encoding.UTF8.GetBytes(path + "\0");
        fixed (byte* p = bytes)
        {
            int fd = LibC.open(p, LibC.O_RDWR | LibC.O_CREAT | LibC.O_DIRECT | LibC.O_CLOEXEC, (ushort)0x1B0);
            if (fd < 0)
            {
                File.Delete(path);
                return false;
            }

            LibC.close(fd);
            File.Delete(path);
            return true;
        }
    }
}
