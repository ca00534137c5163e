using System.Text;

namespace Hci.Transport.Iscsi;

/// <summary>Why a text data segment (login or text request) is refused.</summary>
internal enum IscsiTextError
{
    /// <summary>Well formed.</summary>
    None = 0,

    /// <summary>A pair without '=' or not ended by a NUL.</summary>
    Malformed,

    /// <summary>An empty key, a key over 63 bytes or with characters RFC 7143 does not allow.</summary>
    BadKey,

    /// <summary>A value over the allowed length.</summary>
    ValueTooLong,

    /// <summary>The same key twice in one request.</summary>
    Duplicate,

    /// <summary>More pairs than a request may carry here.</summary>
    TooMany,
}

/// <summary>
/// The key=value text of login and text PDUs (RFC 7143, 6.1): pairs in UTF-8, each ended by a NUL. Parsing is
/// strict and bounded, since the text comes from the network.
/// </summary>
internal static class IscsiText
{
    /// <summary>Longest key.</summary>
    public const int MaxKeyLength = 63;

    /// <summary>Longest value (the standard's limit for most keys; 8192 for a few that list addresses or names).</summary>
    public const int MaxValueLength = 8192;

    /// <summary>Most pairs accepted from one request.</summary>
    public const int MaxPairs = 256;

    /// <summary>Parses a data segment.</summary>
    /// <param name="data">The segment, padding excluded (a trailing run of NULs is tolerated).</param>
    /// <param name="pairs">Receives the pairs in order.</param>
    /// <returns>The error, or none.</returns>
    public static IscsiTextError Parse(ReadOnlySpan<byte> data, List<KeyValuePair<string, string>> pairs)
    {
        ArgumentNullException.ThrowIfNull(pairs);
        pairs.Clear();
        while (data.Length > 0)
        {
            int end = data.IndexOf((byte)0);
            if (end < 0)
            {
                return IscsiTextError.Malformed;
            }

            var pair = data[..end];
            data = data[(end + 1)..];
            if (pair.Length == 0)
            {
                if (data.IndexOfAnyExcept((byte)0) < 0)
                {
                    break; // padding
                }

                return IscsiTextError.Malformed;
            }

            int eq = pair.IndexOf((byte)'=');
            if (eq < 0)
            {
                return IscsiTextError.Malformed;
            }

            var key = pair[..eq];
            var value = pair[(eq + 1)..];
            if (key.Length == 0 || key.Length > MaxKeyLength || !ValidKey(key))
            {
                return IscsiTextError.BadKey;
            }

            if (value.Length > MaxValueLength)
            {
                return IscsiTextError.ValueTooLong;
            }

            if (pairs.Count == MaxPairs)
            {
                return IscsiTextError.TooMany;
            }

            string k = Encoding.ASCII.GetString(key);
            foreach (var existing in pairs)
            {
                if (existing.Key == k)
                {
                    return IscsiTextError.Duplicate;
                }
            }

            string v;
            try
            {
                v = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(value);
            }
            catch (DecoderFallbackException)
            {
                return IscsiTextError.Malformed;
            }

            pairs.Add(new KeyValuePair<string, string>(k, v));
        }

        return IscsiTextError.None;
    }

    /// <summary>Writes pairs as a data segment (each ended by a NUL; no padding).</summary>
    /// <param name="pairs">The pairs.</param>
    /// <returns>The bytes.</returns>
    public static byte[] Format(IEnumerable<KeyValuePair<string, string>> pairs)
    {
        ArgumentNullException.ThrowIfNull(pairs);
        var bytes = new List<byte>();
        foreach (var (key, value) in pairs)
        {
            bytes.AddRange(Encoding.UTF8.GetBytes(key));
            bytes.Add((byte)'=');
            bytes.AddRange(Encoding.UTF8.GetBytes(value));
            bytes.Add(0);
        }

        return [.. bytes];
    }

    // Keys: letters, digits, '.', '-', '+', '@', '_' (RFC 7143, 6.1).
    private static bool ValidKey(ReadOnlySpan<byte> key)
    {
        foreach (byte b in key)
        {
            bool ok = b is >= (byte)'a' and <= (byte)'z' or >= (byte)'A' and <= (byte)'Z' or >= (byte)'0' and <= (byte)'9'
                or (byte)'.' or (byte)'-' or (byte)'+' or (byte)'@' or (byte)'_';
            if (!ok)
            {
                return false;
            }
        }

        return true;
    }
}
