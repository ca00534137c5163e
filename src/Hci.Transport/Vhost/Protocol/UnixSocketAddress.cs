using System.Text;
using Tmds.Linux;

namespace Hci.Transport.Vhost;

/// <summary>Builds a Unix socket address (the path was checked to fit by the options that carry it).</summary>
internal static unsafe class UnixSocketAddress
{
    public static sockaddr_un Create(string path)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(path);
        if (bytes.Length > 107)
        {
            throw new ArgumentException($"'{path}' is longer than a Unix socket path may be (107 bytes).", nameof(path));
        }

        sockaddr_un address = default;
        address.sun_family = (ushort)LibC.AF_UNIX;
        for (int i = 0; i < bytes.Length; i++)
        {
            address.sun_path[i] = bytes[i];
        }

        return address;
    }
}
