using System.Text;
using Google.Protobuf;

namespace Hci.Cluster.Etcd;

/// <summary>Keys between Hci (strings, without the store's prefix) and etcd (bytes, with it).</summary>
internal sealed class EtcdKeys(string prefix)
{
    private readonly byte[] _prefix = Encoding.UTF8.GetBytes(prefix);

    public ByteString Key(string key)
    {
        ArgumentException.ThrowIfNullOrEmpty(key);
        int length = Encoding.UTF8.GetByteCount(key);
        var bytes = new byte[checked(_prefix.Length + length)];
        _prefix.CopyTo(bytes, 0);
        Encoding.UTF8.GetBytes(key, bytes.AsSpan(_prefix.Length));
        return UnsafeByteOperations.UnsafeWrap(bytes);
    }

    /// <summary>The range [start, end) of every key that starts with <paramref name="prefix"/> (etcd's prefix range).</summary>
    public (ByteString Start, ByteString End) Range(string prefix)
    {
        ArgumentNullException.ThrowIfNull(prefix);
        var bytes = new byte[checked(_prefix.Length + Encoding.UTF8.GetByteCount(prefix))];
        _prefix.CopyTo(bytes, 0);
        Encoding.UTF8.GetBytes(prefix, bytes.AsSpan(_prefix.Length));
        if (bytes.Length == 0)
        {
            // Every key: etcd reads key "\0" with range_end "\0" as "all keys".
            return (ByteString.CopyFrom(0), ByteString.CopyFrom(0));
        }

        return (UnsafeByteOperations.UnsafeWrap(bytes), UnsafeByteOperations.UnsafeWrap(RangeEnd(bytes)));
    }

    /// <summary>The smallest key greater than every key that starts with <paramref name="prefix"/>.</summary>
    internal static byte[] RangeEnd(ReadOnlySpan<byte> prefix)
    {
        for (int i = prefix.Length - 1; i >= 0; i--)
        {
            if (prefix[i] != 0xFF)
            {
                var end = prefix[..(i + 1)].ToArray();
                end[i]++;
                return end;
            }
        }

        // Only 0xFF bytes: no key is greater, so "\0" (to the end of the key space).
        return [0];
    }

    /// <summary>The Hci key of an etcd key (without the store's prefix).</summary>
    public string Strip(ByteString key)
    {
        var span = key.Span;
        return span.StartsWith(_prefix) ? Encoding.UTF8.GetString(span[_prefix.Length..]) : Encoding.UTF8.GetString(span);
    }
}
