using System.Security.Cryptography;

namespace Hci.Transport.Replication;

/// <summary>
/// The cluster key: a file of random bytes that every node of a cluster holds (mode 0600), from which the
/// node-to-node protocol's challenge-response proves that both ends of a connection belong to the cluster.
/// </summary>
public static class ClusterKey
{
    /// <summary>The fewest key bytes accepted (256 bits).</summary>
    public const int MinLength = 32;

    /// <summary>The most key bytes accepted.</summary>
    public const int MaxLength = 4096;

    /// <summary>The key length <see cref="Generate"/> writes by default.</summary>
    public const int DefaultLength = 64;

    /// <summary>Reads a key file, refusing one that others than its owner may read.</summary>
    /// <param name="path">The key file.</param>
    /// <returns>The key bytes.</returns>
    /// <exception cref="FileNotFoundException">There is no such file.</exception>
    /// <exception cref="UnauthorizedAccessException">The file is readable or writable by its group or by others.</exception>
    /// <exception cref="InvalidDataException">The file is shorter than <see cref="MinLength"/> or longer than <see cref="MaxLength"/> bytes.</exception>
    public static byte[] Load(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"The cluster key file {path} does not exist; make one with ClusterKey.Generate (random bytes, mode 0600) and copy it to every node.", path);
        }

        var mode = File.GetUnixFileMode(path);
        const UnixFileMode Others = UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute
            | UnixFileMode.OtherRead | UnixFileMode.OtherWrite | UnixFileMode.OtherExecute;
        if ((mode & Others) != 0)
        {
            throw new UnauthorizedAccessException($"The cluster key file {path} is accessible to its group or to others (mode {Convert.ToString((int)mode & 0x1FF, 8)}); run `chmod 600 {path}`.");
        }

        long length = new FileInfo(path).Length;
        if (length is < MinLength or > MaxLength)
        {
            throw new InvalidDataException($"The cluster key file {path} holds {length} bytes; a key is {MinLength} to {MaxLength} random bytes (ClusterKey.Generate writes {DefaultLength}).");
        }

        return File.ReadAllBytes(path);
    }

    /// <summary>Writes a new key of random bytes to a file created with mode 0600.</summary>
    /// <param name="path">The file; it must not exist.</param>
    /// <param name="length">Key bytes, <see cref="MinLength"/> to <see cref="MaxLength"/>.</param>
    /// <exception cref="IOException">The file exists already.</exception>
    public static void Generate(string path, int length = DefaultLength)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentOutOfRangeException.ThrowIfLessThan(length, MinLength);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(length, MaxLength);
        byte[] key = RandomNumberGenerator.GetBytes(length);
        using var file = new FileStream(path, new FileStreamOptions
        {
            Mode = FileMode.CreateNew,
            Access = FileAccess.Write,
            UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
        });
        file.Write(key);
        file.Flush(flushToDisk: true);
        CryptographicOperations.ZeroMemory(key);
    }
}
