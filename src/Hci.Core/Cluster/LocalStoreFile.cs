using System.Buffers.Binary;
using System.IO.Hashing;
using System.Text;
using Hci.Core.Blocks;
using Hci.Core.Modules;
using Tmds.Linux;

namespace Hci.Core.Cluster;

/// <summary>
/// The local cluster store's file: every key with its value, modification revision and lease, every lease with the
/// process that holds it, the store's revision, generation and next lease id, and an XxHash3 of all of it. Written
/// whole on every change with atomic replace (temporary file, fsync, rename over, fsync of the directory), so a crash
/// leaves the old state or the new one, never a mix.
/// </summary>
/// <remarks>
/// Layout (little-endian): magic <c>HCISTOR2</c>, generation (8: one more on every write of the file, leases
/// included, so that a process sees from the header alone whether another one changed it), revision (8), next lease
/// (8), lease count (4), then per lease: id (8), holder pid (4), holder start time (8, field 22 of /proc/PID/stat);
/// key count (4), then per key: key length (4), key (UTF-8), value length (4), value, modification revision (8),
/// lease (8); then the XxHash3 of everything before it (8). Files of the first layout (<c>HCISTOR1</c>: no generation,
/// no leases) are read too.
/// </remarks>
internal static unsafe class LocalStoreFile
{
    public const string FileName = "cluster-store";
    public const string TempName = "cluster-store.tmp";
    private const int MaxKeyBytes = 4096;
    private const int MaxValueBytes = 16 << 20;
    private static readonly byte[] Magic = "HCISTOR2"u8.ToArray();
    private static readonly byte[] MagicV1 = "HCISTOR1"u8.ToArray();

    /// <summary>The store's contents as read from or written to the file.</summary>
    public sealed record Contents(long Generation, long Revision, long NextLease, IReadOnlyList<LeaseHolder> Leases, IReadOnlyList<StoreEntry> Entries);

    /// <summary>A lease and the process that holds it (its pid and start time, which tell a reused pid apart).</summary>
    public readonly record struct LeaseHolder(long Id, int Pid, long StartTime);

    /// <summary>The generation in a file's header, or -1 when the header is not one of this layout (then read it whole).</summary>
    public static long ReadGeneration(ReadOnlySpan<byte> header) =>
        header.Length >= Magic.Length + 8 && header[..Magic.Length].SequenceEqual(Magic)
            ? BinaryPrimitives.ReadInt64LittleEndian(header[Magic.Length..])
            : -1;

    public static byte[] Serialize(long generation, long revision, long nextLease, IReadOnlyCollection<LeaseHolder> leases, IReadOnlyCollection<StoreEntry> entries)
    {
        long size = Magic.Length + 8 + 8 + 8 + 4 + ((long)leases.Count * 20) + 4 + 8;
        foreach (var entry in entries)
        {
            size += 4 + Encoding.UTF8.GetByteCount(entry.Key) + 4 + entry.Value.Length + 8 + 8;
        }

        var buffer = new byte[checked((int)size)];
        var span = buffer.AsSpan();
        Magic.CopyTo(span);
        int at = Magic.Length;
        BinaryPrimitives.WriteInt64LittleEndian(span[at..], generation);
        BinaryPrimitives.WriteInt64LittleEndian(span[(at + 8)..], revision);
        BinaryPrimitives.WriteInt64LittleEndian(span[(at + 16)..], nextLease);
        BinaryPrimitives.WriteInt32LittleEndian(span[(at + 24)..], leases.Count);
        at += 28;
        foreach (var lease in leases)
        {
            BinaryPrimitives.WriteInt64LittleEndian(span[at..], lease.Id);
            BinaryPrimitives.WriteInt32LittleEndian(span[(at + 8)..], lease.Pid);
            BinaryPrimitives.WriteInt64LittleEndian(span[(at + 12)..], lease.StartTime);
            at += 20;
        }

        BinaryPrimitives.WriteInt32LittleEndian(span[at..], entries.Count);
        at += 4;
        foreach (var entry in entries)
        {
            int keyLength = Encoding.UTF8.GetBytes(entry.Key, span[(at + 4)..]);
            BinaryPrimitives.WriteInt32LittleEndian(span[at..], keyLength);
            at += 4 + keyLength;
            BinaryPrimitives.WriteInt32LittleEndian(span[at..], entry.Value.Length);
            entry.Value.Span.CopyTo(span[(at + 4)..]);
            at += 4 + entry.Value.Length;
            BinaryPrimitives.WriteInt64LittleEndian(span[at..], entry.ModRevision);
            BinaryPrimitives.WriteInt64LittleEndian(span[(at + 8)..], entry.Lease);
            at += 16;
        }

        BinaryPrimitives.WriteUInt64LittleEndian(span[at..], XxHash3.HashToUInt64(span[..at]));
        return buffer;
    }

    /// <summary>Parses a store file; throws <see cref="InvalidDataException"/> saying what is wrong.</summary>
    public static Contents Parse(ReadOnlySpan<byte> data)
    {
        bool v1 = data.Length >= MagicV1.Length && data[..MagicV1.Length].SequenceEqual(MagicV1);
        if (data.Length < Magic.Length + 28 || (!v1 && !data[..Magic.Length].SequenceEqual(Magic)))
        {
            throw new InvalidDataException("it does not start with an Hci cluster store header");
        }

        var body = data[..^8];
        if (XxHash3.HashToUInt64(body) != BinaryPrimitives.ReadUInt64LittleEndian(data[^8..]))
        {
            throw new InvalidDataException("its checksum does not match its contents");
        }

        int at = Magic.Length;
        long generation = 0;
        if (!v1)
        {
            generation = BinaryPrimitives.ReadInt64LittleEndian(body[at..]);
            at += 8;
        }

        if (body.Length - at < 20)
        {
            throw new InvalidDataException("its header is cut short");
        }

        long revision = BinaryPrimitives.ReadInt64LittleEndian(body[at..]);
        long nextLease = BinaryPrimitives.ReadInt64LittleEndian(body[(at + 8)..]);
        at += 16;
        var leases = new List<LeaseHolder>();
        if (!v1)
        {
            int leaseCount = BinaryPrimitives.ReadInt32LittleEndian(body[at..]);
            at += 4;
            if (leaseCount < 0 || leaseCount > (body.Length - at) / 20)
            {
                throw new InvalidDataException($"its lease count {leaseCount} is out of range");
            }

            for (int i = 0; i < leaseCount; i++)
            {
                leases.Add(new LeaseHolder(BinaryPrimitives.ReadInt64LittleEndian(body[at..]), BinaryPrimitives.ReadInt32LittleEndian(body[(at + 8)..]), BinaryPrimitives.ReadInt64LittleEndian(body[(at + 12)..])));
                at += 20;
            }

            if (body.Length - at < 4)
            {
                throw new InvalidDataException("its key count is cut short");
            }
        }

        int count = BinaryPrimitives.ReadInt32LittleEndian(body[at..]);
        at += 4;
        if (generation < 0 || revision < 1 || nextLease < 1 || count < 0 || count > body.Length / 24)
        {
            throw new InvalidDataException($"its header is out of range (generation {generation}, revision {revision}, next lease {nextLease}, {count} keys)");
        }

        var entries = new List<StoreEntry>(count);
        for (int i = 0; i < count; i++)
        {
            int keyLength = ReadLength(body, ref at, MaxKeyBytes, "key");
            string key = Encoding.UTF8.GetString(body.Slice(at, keyLength));
            at += keyLength;
            int valueLength = ReadLength(body, ref at, MaxValueBytes, "value");
            byte[] value = body.Slice(at, valueLength).ToArray();
            at += valueLength;
            if (body.Length - at < 16)
            {
                throw new InvalidDataException($"key {i} is cut short");
            }

            long modRevision = BinaryPrimitives.ReadInt64LittleEndian(body[at..]);
            long lease = BinaryPrimitives.ReadInt64LittleEndian(body[(at + 8)..]);
            at += 16;
            if (modRevision < 1 || modRevision > revision || (i > 0 && string.CompareOrdinal(entries[i - 1].Key, key) >= 0))
            {
                throw new InvalidDataException($"key '{key}' is out of order or has revision {modRevision} (store revision {revision})");
            }

            entries.Add(new StoreEntry(key, value, modRevision, lease));
        }

        if (at != body.Length)
        {
            throw new InvalidDataException($"{body.Length - at} bytes follow the last key");
        }

        return new Contents(generation, revision, nextLease, leases, entries);
    }

    /// <summary>Writes <paramref name="data"/> as the store file of <paramref name="directory"/> by atomic replace;
    /// <paramref name="beforeRename"/> (tests) runs once the temporary file is durable.</summary>
    public static void Replace(string directory, byte[] data, Action? beforeRename = null)
    {
        string temp = Path.Combine(directory, TempName);
        string target = Path.Combine(directory, FileName);
        using (var stream = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 0))
        {
            stream.Write(data);
            stream.Flush(flushToDisk: true);
        }

        beforeRename?.Invoke();
        File.Move(temp, target, overwrite: true);
        SyncDirectory(directory);
    }

    /// <summary>fsync of the directory, so that the rename itself is durable.</summary>
    public static void SyncDirectory(string directory)
    {
        int fd;
        var bytes = Encoding.UTF8.GetBytes(directory + "\0");
        fixed (byte* p = bytes)
        {
            fd = LibC.open(p, LibC.O_RDONLY | LibC.O_DIRECTORY | LibC.O_CLOEXEC, 0);
        }

        if (fd < 0)
        {
            throw new IOException($"Cannot open directory '{directory}' to sync it: {Errno.Describe(LibC.errno)}.");
        }

        using var handle = new FileDescriptorHandle(fd);
        if (LibC.fsync(fd) != 0)
        {
            throw new IOException($"Cannot sync directory '{directory}': {Errno.Describe(LibC.errno)}.");
        }
    }

    private static int ReadLength(ReadOnlySpan<byte> body, ref int at, int max, string what)
    {
        if (body.Length - at < 4)
        {
            throw new InvalidDataException($"a {what} length is cut short");
        }

        int length = BinaryPrimitives.ReadInt32LittleEndian(body[at..]);
        at += 4;
        if (length < 0 || length > max || length > body.Length - at)
        {
            throw new InvalidDataException($"a {what} length of {length} bytes is out of range");
        }

        return length;
    }
}
