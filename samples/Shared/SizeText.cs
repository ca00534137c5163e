using System.Globalization;

namespace Hci.Samples.Shared;

/// <summary>Sizes on the command line: a positive number of bytes with an optional k, m, g or t suffix (powers of 1024).</summary>
internal static class SizeText
{
    public static bool TryParse(string text, out long bytes)
    {
        bytes = 0;
        text = text.Trim();
        long multiplier = 1;
        if (text.Length > 0 && char.IsLetter(text[^1]))
        {
            multiplier = char.ToLowerInvariant(text[^1]) switch
            {
                'k' => 1L << 10,
                'm' => 1L << 20,
                'g' => 1L << 30,
                't' => 1L << 40,
                _ => 0,
            };
            text = text[..^1];
        }

        if (multiplier == 0 || !long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out long value) || value <= 0 || value > long.MaxValue / multiplier)
        {
            return false;
        }

        bytes = value * multiplier;
        return true;
    }
}
