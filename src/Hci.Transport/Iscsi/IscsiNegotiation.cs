using System.Globalization;

namespace Hci.Transport.Iscsi;

/// <summary>A session's operational parameters (RFC 7143, 13): the standard's defaults until negotiated.</summary>
internal sealed class IscsiSessionParameters
{
    /// <summary>CRC32C on headers.</summary>
    public bool HeaderDigest { get; set; }

    /// <summary>CRC32C on data segments.</summary>
    public bool DataDigest { get; set; }

    /// <summary>Connections per session.</summary>
    public int MaxConnections { get; set; } = 1;

    /// <summary>Whether the initiator must wait for an R2T before unsolicited data (false allows it).</summary>
    public bool InitialR2T { get; set; } = true;

    /// <summary>Whether data may ride in the command PDU.</summary>
    public bool ImmediateData { get; set; } = true;

    /// <summary>Largest data segment this side receives (declared by this side).</summary>
    public int MaxRecvDataSegmentLength { get; set; } = 8192;

    /// <summary>Largest data segment this side may send (declared by the peer).</summary>
    public int MaxSendDataSegmentLength { get; set; } = 8192;

    /// <summary>Largest solicited burst.</summary>
    public int MaxBurstLength { get; set; } = 262144;

    /// <summary>Largest unsolicited burst.</summary>
    public int FirstBurstLength { get; set; } = 65536;

    /// <summary>Seconds to wait before reconnecting after a logout or a drop.</summary>
    public int DefaultTime2Wait { get; set; } = 2;

    /// <summary>Seconds state is kept after a drop.</summary>
    public int DefaultTime2Retain { get; set; } = 20;

    /// <summary>R2Ts outstanding per task.</summary>
    public int MaxOutstandingR2T { get; set; } = 1;

    /// <summary>Data PDUs of a sequence in order.</summary>
    public bool DataPduInOrder { get; set; } = true;

    /// <summary>Data sequences in order.</summary>
    public bool DataSequenceInOrder { get; set; } = true;

    /// <summary>Error recovery level (this target supports 0).</summary>
    public int ErrorRecoveryLevel { get; set; }

    /// <summary>A copy.</summary>
    /// <returns>The copy.</returns>
    public IscsiSessionParameters Clone() => (IscsiSessionParameters)MemberwiseClone();
}

/// <summary>
/// The target's side of operational negotiation (RFC 7143, 6.2 and 13): answers each key an initiator offers with
/// the standard's rule for it (minimum, maximum, boolean AND or OR, first acceptable value of a list), records
/// the outcome, says NotUnderstood to keys it does not know and Reject to values out of range.
/// </summary>
internal static class IscsiNegotiation
{
    /// <summary>Keys the login layer handles itself (names, session type, security); left alone here.</summary>
    public static readonly IReadOnlySet<string> LoginKeys = new HashSet<string>(StringComparer.Ordinal)
    {
        "InitiatorName", "InitiatorAlias", "TargetName", "TargetAlias", "SessionType", "AuthMethod",
        "CHAP_A", "CHAP_I", "CHAP_C", "CHAP_N", "CHAP_R", "TargetPortalGroupTag", "TargetAddress", "SendTargets",
    };

    /// <summary>Answers the operational keys of one request.</summary>
    /// <param name="offered">The initiator's pairs.</param>
    /// <param name="target">The target's own limits and preferences (read only).</param>
    /// <param name="session">The session's parameters so far; updated with each outcome.</param>
    /// <param name="response">Receives the answers, in the order asked.</param>
    public static void Respond(IReadOnlyList<KeyValuePair<string, string>> offered, IscsiSessionParameters target, IscsiSessionParameters session, List<KeyValuePair<string, string>> response)
    {
        ArgumentNullException.ThrowIfNull(offered);
        ArgumentNullException.ThrowIfNull(target);
        ArgumentNullException.ThrowIfNull(session);
        ArgumentNullException.ThrowIfNull(response);
        foreach (var (key, value) in offered)
        {
            if (LoginKeys.Contains(key))
            {
                continue;
            }

            // Each rule answers Reject for a value out of range; otherwise the outcome (or, for a declaration,
            // this side's own value).
            string answer = key switch
            {
                "HeaderDigest" => Digest(value, target.HeaderDigest, d => session.HeaderDigest = d),
                "DataDigest" => Digest(value, target.DataDigest, d => session.DataDigest = d),
                "MaxConnections" => Number(value, 1, 65535, n => session.MaxConnections = Math.Min(n, target.MaxConnections)) ?? Format(session.MaxConnections),
                "InitialR2T" => Boolean(value, v => session.InitialR2T = v || target.InitialR2T) ?? Format(session.InitialR2T),
                "ImmediateData" => Boolean(value, v => session.ImmediateData = v && target.ImmediateData) ?? Format(session.ImmediateData),
                "MaxRecvDataSegmentLength" => Number(value, 512, 16777215, n => session.MaxSendDataSegmentLength = n) ?? Format(session.MaxRecvDataSegmentLength = target.MaxRecvDataSegmentLength),
                "MaxBurstLength" => Number(value, 512, 16777215, n => session.MaxBurstLength = Math.Min(n, target.MaxBurstLength)) ?? Format(session.MaxBurstLength),
                "FirstBurstLength" => Number(value, 512, 16777215, n => session.FirstBurstLength = Math.Min(n, target.FirstBurstLength))
                    ?? Format(session.FirstBurstLength = Math.Min(session.FirstBurstLength, session.MaxBurstLength)),
                "DefaultTime2Wait" => Number(value, 0, 3600, n => session.DefaultTime2Wait = Math.Max(n, target.DefaultTime2Wait)) ?? Format(session.DefaultTime2Wait),
                "DefaultTime2Retain" => Number(value, 0, 3600, n => session.DefaultTime2Retain = Math.Min(n, target.DefaultTime2Retain)) ?? Format(session.DefaultTime2Retain),
                "MaxOutstandingR2T" => Number(value, 1, 65535, n => session.MaxOutstandingR2T = Math.Min(n, target.MaxOutstandingR2T)) ?? Format(session.MaxOutstandingR2T),
                "DataPDUInOrder" => Boolean(value, v => session.DataPduInOrder = v || target.DataPduInOrder) ?? Format(session.DataPduInOrder),
                "DataSequenceInOrder" => Boolean(value, v => session.DataSequenceInOrder = v || target.DataSequenceInOrder) ?? Format(session.DataSequenceInOrder),
                "ErrorRecoveryLevel" => Number(value, 0, 2, n => session.ErrorRecoveryLevel = Math.Min(n, target.ErrorRecoveryLevel)) ?? Format(session.ErrorRecoveryLevel),
                "IFMarker" or "OFMarker" => Boolean(value, _ => { }) ?? "No",
                "IFMarkInt" or "OFMarkInt" => "Irrelevant",
                _ => "NotUnderstood",
            };

            response.Add(new KeyValuePair<string, string>(key, answer));
        }

        // RFC 7143 13.14: FirstBurstLength must not exceed MaxBurstLength, whichever was negotiated (or left at its
        // default) and in whatever order the keys came.
        if (session.FirstBurstLength > session.MaxBurstLength)
        {
            session.FirstBurstLength = session.MaxBurstLength;
        }
    }

    /// <summary>Parses a numeric value: decimal, or hexadecimal with 0x.</summary>
    /// <param name="text">The value.</param>
    /// <param name="value">The number.</param>
    /// <returns>False when it is not a number of at most 64 bits.</returns>
    public static bool TryParseNumber(string text, out ulong value)
    {
        if (text.StartsWith("0x", StringComparison.OrdinalIgnoreCase))
        {
            return ulong.TryParse(text.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out value) && text.Length > 2;
        }

        return ulong.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out value);
    }

    private static string Format(int value) => value.ToString(CultureInfo.InvariantCulture);

    private static string Format(bool value) => value ? "Yes" : "No";

    // Null when the value is accepted (and applied), "Reject" when it is out of range.
    private static string? Number(string text, int min, int max, Action<int> apply)
    {
        if (!TryParseNumber(text, out ulong n) || n < (ulong)min || n > (ulong)max)
        {
            return "Reject";
        }

        apply((int)n);
        return null;
    }

    private static string? Boolean(string text, Action<bool> apply)
    {
        if (text is not ("Yes" or "No"))
        {
            return "Reject";
        }

        apply(text == "Yes");
        return null;
    }

    // A list in the initiator's order of preference: the first value this target accepts wins.
    private static string Digest(string text, bool targetAllowsCrc, Action<bool> apply)
    {
        foreach (string option in text.Split(','))
        {
            if (option == "None")
            {
                apply(false);
                return "None";
            }

            if (option == "CRC32C" && targetAllowsCrc)
            {
                apply(true);
                return "CRC32C";
            }
        }

        return "Reject";
    }
}
