using System.Buffers.Binary;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Hci.Core.Buffers;
using Hci.Transport.Scsi;
using Microsoft.Extensions.Logging;

namespace Hci.Transport.Iscsi;

/// <summary>
/// One iSCSI connection (one connection per session): login, then the full feature phase. PDUs are read one at
/// a time and checked against the negotiated limits; commands run concurrently and their answers are serialized
/// on the socket. ErrorRecoveryLevel 0: a header digest error or a framing error drops the connection.
/// </summary>
internal sealed partial class IscsiConnection
{
    private const uint ReservedTag = 0xFFFFFFFF;

    private readonly IscsiTarget _target;
    private readonly Socket _socket;
    private readonly ILogger _logger;
    private readonly byte[] _header = new byte[IscsiHeader.Length + 1024];

    // Login text an initiator may spread over continued PDUs before the target gives up on it.
    private const int MaxLoginText = 64 * 1024;
    private readonly IscsiSessionParameters _session = new();
    private readonly IscsiSessionParameters _limits;
    private readonly CancellationTokenSource _closing = new();
    private uint _statSn;
    private bool _discovery;
    private int _nexus;
    private int _closed;
    private string _initiatorName = "";
    private string _isid = "";

    public IscsiConnection(IscsiTarget target, Socket socket)
    {
        _target = target;
        _socket = socket;
        _logger = target.Logger;
        var o = target.Options;
        _window = new IscsiCommandWindow(o.CommandWindow);
        _limits = new IscsiSessionParameters
        {
            HeaderDigest = true,
            DataDigest = true,
            MaxConnections = 1,
            InitialR2T = false,
            ImmediateData = true,
            MaxRecvDataSegmentLength = o.MaxRecvDataSegmentLength,
            MaxBurstLength = o.MaxBurstLength,
            FirstBurstLength = o.FirstBurstLength,
            DefaultTime2Wait = 2,
            DefaultTime2Retain = 0,
            MaxOutstandingR2T = 1,
            ErrorRecoveryLevel = 0,
        };
    }

    public async Task RunAsync(CancellationToken stop)
    {
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(stop, _closing.Token);
        var token = linked.Token;
        bool handedOver = false;
        try
        {
            // A login has a deadline: a connection that never finishes one cannot hold a place for ever.
            bool loggedIn;
            using (var login = CancellationTokenSource.CreateLinkedTokenSource(token))
            {
                login.CancelAfter(_target.Options.LoginTimeout);
                try
                {
                    loggedIn = await LoginAsync(login.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (login.IsCancellationRequested && !token.IsCancellationRequested)
                {
                    IscsiLog.LoginTimedOut(_logger, SafePeer(), _target.Options.LoginTimeout.TotalSeconds);
                    loggedIn = false;
                }
            }

            if (loggedIn)
            {
                // The full feature phase runs on one of the target's reactors, which owns the socket from here on.
                handedOver = StartDataPath();
                if (handedOver)
                {
                    await _dataPathDone.Task.ConfigureAwait(false);
                }
            }
        }
        catch (Exception e) when (e is IOException or SocketException or OperationCanceledException or ObjectDisposedException or ProtocolException)
        {
            if (e is ProtocolException)
            {
                IscsiLog.ProtocolError(_logger, SafePeer(), _initiatorName, e.Message);
            }
        }
        catch (Exception e)
        {
            IscsiLog.LoginConnectionFailed(_logger, e, SafePeer());
        }
        finally
        {
            if (!handedOver)
            {
                await CloseAsync().ConfigureAwait(false);
            }
        }
    }

    /// <summary>Closes the connection: at once during login, or by asking the data path to stop and waiting.</summary>
    /// <returns>When closed.</returns>
    public Task CloseAsync()
    {
        lock (_phaseLock)
        {
            if (_reactor != null)
            {
                RequestStop();
                return _dataPathDone.Task;
            }

            if (_closed != 0)
            {
                return Task.CompletedTask;
            }

            _closed = 1;
        }

        _closing.Cancel();
        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (SocketException)
        {
        }

        _socket.Dispose();
        _target.Closed(this);
        return Task.CompletedTask;
    }

    private string SafePeer()
    {
        try
        {
            return _socket.RemoteEndPoint?.ToString() ?? "?";
        }
        catch (ObjectDisposedException)
        {
            return "?";
        }
    }

    // ---- framing ----

    private async Task ReadExactly(Memory<byte> into, CancellationToken token)
    {
        while (into.Length > 0)
        {
            int n = await _socket.ReceiveAsync(into, SocketFlags.None, token).ConfigureAwait(false);
            if (n == 0)
            {
                throw new IOException("the initiator closed the connection");
            }

            into = into[n..];
        }
    }

    /// <summary>
    /// Reads one login PDU: header and data segment (bounded). Login PDUs never carry digests: negotiated digests
    /// apply from the full feature phase on, which the data path serves.
    /// </summary>
    private async Task<(byte[] Data, int Length)> ReadLoginPduAsync(int maxData, CancellationToken token)
    {
        await ReadExactly(_header.AsMemory(0, IscsiHeader.Length), token).ConfigureAwait(false);
        var h = new IscsiHeader(_header);
        int ahs = h.AdditionalHeaderLength;
        int dataLength = h.DataSegmentLength;
        if (ahs > 0)
        {
            await ReadExactly(_header.AsMemory(IscsiHeader.Length, ahs), token).ConfigureAwait(false);
        }

        if (dataLength > maxData)
        {
            throw new ProtocolException($"a data segment of {dataLength} bytes, over the negotiated {maxData}");
        }

        int padded = (dataLength + 3) & ~3;
        byte[] data = padded == 0 ? [] : new byte[padded];
        if (padded > 0)
        {
            await ReadExactly(data, token).ConfigureAwait(false);
        }

        return (data, dataLength);
    }

    /// <summary>Sends one login response (no digests, see <see cref="ReadLoginPduAsync"/>).</summary>
    private async Task SendLoginAsync(byte[] header, ReadOnlyMemory<byte> data, CancellationToken token)
    {
        new IscsiHeader(header).DataSegmentLength = data.Length;
        var pdu = new byte[IscsiHeader.Length + ((data.Length + 3) & ~3)];
        header.AsSpan(0, IscsiHeader.Length).CopyTo(pdu);
        data.Span.CopyTo(pdu.AsSpan(IscsiHeader.Length));
        for (int sent = 0; sent < pdu.Length;)
        {
            sent += await _socket.SendAsync(pdu.AsMemory(sent), SocketFlags.None, token).ConfigureAwait(false);
        }
    }

    // ---- login ----

    private async Task<bool> LoginAsync(CancellationToken token)
    {
        var pairs = new List<KeyValuePair<string, string>>();
        var response = new List<KeyValuePair<string, string>>();
        var text = new List<byte>();
        bool authenticated = _target.Options.ChapUser == null;
        string? chapChallenge = null;
        byte chapId = 0;
        int stage = -1;
        while (true)
        {
            var (data, length) = await ReadLoginPduAsync(8192, token).ConfigureAwait(false);
            var h = new LoginRequestPdu(_header);
            if (h.Header.Opcode != IscsiOpcode.LoginRequest)
            {
                throw new ProtocolException($"{h.Header.Opcode} during login");
            }

            bool transit = h.Transit;
            bool more = h.Continue;
            int csg = h.CurrentStage;
            int nsg = h.NextStage;
            byte versionMax = h.VersionMax;
            byte versionMin = h.VersionMin;
            uint itt = h.InitiatorTaskTag;
            if (stage < 0)
            {
                _isid = Convert.ToHexString(h.Isid).ToLowerInvariant();
                _window.ExpCmdSn = h.CmdSn;
                _statSn = h.ExpStatSn;
            }

            var reply = new byte[IscsiHeader.Length];
            var created = LoginResponsePdu.Create(reply);
            h.Isid.CopyTo(created.Isid);
            created.Tsih = h.Tsih;
            created.InitiatorTaskTag = itt;

            async Task Fail(byte statusClass, byte detail, string why)
            {
                IscsiLog.LoginRefused(_logger, SafePeer(), why);
                if (statusClass == 2 && detail is 1 or 2)
                {
                    // A failed authentication is answered after a pause (this connection's only: others go on), so
                    // that secrets cannot be guessed at network speed.
                    await Task.Delay(_target.Options.FailedLoginDelay, token).ConfigureAwait(false);
                }

                var failed = new LoginResponsePdu(reply);
                failed.Transit = false;
                failed.CurrentStage = 0;
                failed.NextStage = 0;
                failed.StatusClass = statusClass;
                failed.StatusDetail = detail;
                Stamp(reply, advance: false);
                await SendLoginAsync(reply, default, token).ConfigureAwait(false);
            }

            if (versionMin > 0 || versionMax < versionMin)
            {
                await Fail(2, 5, "unsupported version").ConfigureAwait(false);
                return false;
            }

            if (csg == 2 || (transit && (nsg == 2 || nsg < csg)) || (stage >= 0 && csg < stage))
            {
                await Fail(2, 0, "bad login stages").ConfigureAwait(false);
                return false;
            }

            stage = csg;
            if (text.Count + length > MaxLoginText)
            {
                await Fail(2, 0, $"more than {MaxLoginText} bytes of login text").ConfigureAwait(false);
                return false;
            }

            text.AddRange(data.AsSpan(0, length).ToArray());
            if (more)
            {
                // Text continued in the next PDU: acknowledge with an empty response.
                new LoginResponsePdu(reply).CurrentStage = csg;
                Stamp(reply, advance: false);
                await SendLoginAsync(reply, default, token).ConfigureAwait(false);
                continue;
            }

            var error = IscsiText.Parse(text.ToArray(), pairs);
            text.Clear();
            if (error != IscsiTextError.None)
            {
                await Fail(2, 0, $"login text {error}").ConfigureAwait(false);
                return false;
            }

            response.Clear();
            // CHAP values are not logged (responses and challenges are material for an offline guess of the secret).
            if (_logger.IsEnabled(LogLevel.Debug))
            {
                IscsiLog.LoginKeys(_logger, SafePeer(), csg, string.Join(' ', pairs.Select(p => p.Key.StartsWith("CHAP_", StringComparison.Ordinal) ? $"{p.Key}=..." : $"{p.Key}={p.Value}")));
            }

            foreach (var (key, value) in pairs)
            {
                switch (key)
                {
                    case "InitiatorName":
                        _initiatorName = value;
                        break;
                    case "SessionType":
                        if (value is not ("Discovery" or "Normal"))
                        {
                            await Fail(2, 0, $"SessionType {value}").ConfigureAwait(false);
                            return false;
                        }

                        _discovery = value == "Discovery";
                        break;
                    case "TargetName":
                        if (value != _target.Options.TargetName)
                        {
                            await Fail(2, 3, $"unknown target {value}").ConfigureAwait(false);
                            return false;
                        }

                        response.Add(new("TargetPortalGroupTag", "1"));
                        break;
                }
            }

            if (_initiatorName.Length == 0)
            {
                await Fail(2, 7, "no InitiatorName").ConfigureAwait(false);
                return false;
            }

            if (csg == 0)
            {
                // Security negotiation: AuthMethod, then CHAP's exchange.
                var (ok, done, challenge, id) = Chap(pairs, response, chapChallenge, chapId);
                if (!ok)
                {
                    await Fail(2, 1, "authentication failed").ConfigureAwait(false);
                    return false;
                }

                chapChallenge = challenge;
                chapId = id;
                authenticated |= done;
            }
            else
            {
                if (!authenticated)
                {
                    await Fail(2, 1, "operational stage before authentication").ConfigureAwait(false);
                    return false;
                }

                IscsiNegotiation.Respond(pairs, _limits, _session, response);
            }

            bool grant = transit && (csg != 0 || authenticated);
            _sawTargetName |= pairs.Any(p => p.Key == "TargetName");
            if (grant && nsg == 3 && !_discovery && !_sawTargetName)
            {
                await Fail(2, 7, "no TargetName for a normal session").ConfigureAwait(false);
                return false;
            }

            var allowed = _target.Options.AllowedInitiators;
            if (!_discovery && allowed.Count > 0 && !allowed.Any(a => string.Equals(a, _initiatorName, StringComparison.OrdinalIgnoreCase)))
            {
                await Fail(2, 2, $"initiator {_initiatorName} is not allowed").ConfigureAwait(false); // authorization failure
                return false;
            }

            var answer = new LoginResponsePdu(reply)
            {
                Transit = grant,
                CurrentStage = csg,
                NextStage = grant ? nsg : 0,
            };
            if (grant && nsg == 3)
            {
                answer.Tsih = _target.NextTsih();
                if (_discovery)
                {
                    _nexus = _target.NextNexus();
                }
                else
                {
                    // The I_T nexus is the initiator port (name and ISID), not this TCP connection: reservations and
                    // registrations stay with the port across sessions. A session of the same port still open is
                    // reinstated (RFC 7143, 6.3.5): it is closed, and its tasks drained, before this one starts.
                    SessionPort = $"{_initiatorName.ToLowerInvariant()},i,0x{_isid}";
                    _nexus = _target.NexusFor(SessionPort);
                    await _target.ReinstateAsync(SessionPort, this).ConfigureAwait(false);
                }

                if (!_target.TryPromote(this))
                {
                    await Fail(3, 2, $"{_target.Options.MaxConnections} sessions already").ConfigureAwait(false); // out of resources
                    return false;
                }
            }

            // The data segment must not exceed what the initiator receives; login text is small.
            byte[] body = IscsiText.Format(response);
            Stamp(reply, advance: grant && nsg == 3);
            await SendLoginAsync(reply, body, token).ConfigureAwait(false);
            if (grant && nsg == 3)
            {
                _digestsActive = true; // negotiated digests apply from the full feature phase on
                IscsiLog.LoggedIn(_logger, _discovery ? "discovery" : "normal", _initiatorName, SafePeer(), _session.HeaderDigest, _session.DataDigest);
                return true;
            }

            stage = grant ? nsg : csg;
        }
    }

    /// <summary>Its place among the target's pending logins while it logs in (guarded by the target's lock).</summary>
    internal LinkedListNode<IscsiConnection>? PendingNode { get; set; }

    /// <summary>The initiator port of a normal session in (or past) its full feature phase; null before, and for discovery.</summary>
    internal string? SessionPort { get; private set; }

    private bool _sawTargetName;
    private bool _digestsActive;

    private (bool Ok, bool Done, string? Challenge, byte Id) Chap(List<KeyValuePair<string, string>> pairs, List<KeyValuePair<string, string>> response, string? challenge, byte id)
    {
        var o = _target.Options;
        string? Get(string key) => pairs.FirstOrDefault(p => p.Key == key).Value;
        string? methods = Get("AuthMethod");
        if (methods != null)
        {
            var offered = methods.Split(',');
            if (o.ChapUser != null)
            {
                if (!offered.Contains("CHAP"))
                {
                    return (false, false, null, 0);
                }

                response.Add(new("AuthMethod", "CHAP"));
            }
            else
            {
                if (!offered.Contains("None"))
                {
                    response.Add(new("AuthMethod", "Reject"));
                    return (false, false, null, 0);
                }

                response.Add(new("AuthMethod", "None"));
                return (true, true, null, 0);
            }
        }

        if (o.ChapUser == null)
        {
            return (true, true, null, 0);
        }

        string? algorithms = Get("CHAP_A");
        if (algorithms != null)
        {
            if (!algorithms.Split(',').Contains("5"))
            {
                response.Add(new("CHAP_A", "Reject"));
                return (false, false, null, 0);
            }

            id = (byte)RandomNumberGenerator.GetInt32(256);
            challenge = "0x" + Convert.ToHexString(RandomNumberGenerator.GetBytes(16));
            response.Add(new("CHAP_A", "5"));
            response.Add(new("CHAP_I", id.ToString(System.Globalization.CultureInfo.InvariantCulture)));
            response.Add(new("CHAP_C", challenge));
            return (true, false, challenge, id);
        }

        string? name = Get("CHAP_N");
        string? answer = Get("CHAP_R");
        if (name == null || answer == null)
        {
            return (true, false, challenge, id); // nothing to check yet
        }

        if (challenge == null || name != o.ChapUser || !ChapMatches(id, o.ChapSecret!, challenge, answer))
        {
            return (false, false, null, 0);
        }

        // Mutual CHAP: the initiator challenges the target.
        string? theirId = Get("CHAP_I");
        string? theirChallenge = Get("CHAP_C");
        if (theirId != null || theirChallenge != null)
        {
            // A challenge equal to ours (in any encoding) would make this target answer its own challenge for the
            // initiator: a reflection, refused by comparing the decoded bytes.
            if (o.MutualChapUser == null || theirId == null || theirChallenge == null || !byte.TryParse(theirId, out byte mutualId)
                || !TryDecodeChap(theirChallenge, out byte[] c) || c.Length == 0
                || (TryDecodeChap(challenge, out byte[] ours) && c.AsSpan().SequenceEqual(ours)))
            {
                return (false, false, null, 0);
            }

            response.Add(new("CHAP_N", o.MutualChapUser));
            response.Add(new("CHAP_R", "0x" + Convert.ToHexString(ChapResponse(mutualId, o.MutualChapSecret!, c))));
        }

        return (true, true, null, 0);
    }

    private static bool ChapMatches(byte id, string secret, string challenge, string answer)
    {
        if (!TryDecodeChap(challenge, out byte[] c) || !TryDecodeChap(answer, out byte[] r))
        {
            return false;
        }

        return CryptographicOperations.FixedTimeEquals(ChapResponse(id, secret, c), r);
    }

    private static byte[] ChapResponse(byte id, string secret, byte[] challenge)
    {
        var input = new List<byte> { id };
        input.AddRange(Encoding.UTF8.GetBytes(secret));
        input.AddRange(challenge);
        return MD5.HashData(input.ToArray());
    }

    private static bool TryDecodeChap(string value, out byte[] bytes)
    {
        bytes = [];
        try
        {
            if (value.StartsWith("0x", StringComparison.OrdinalIgnoreCase))
            {
                string hex = value[2..];
                bytes = Convert.FromHexString(hex.Length % 2 == 1 ? "0" + hex : hex);
                return true;
            }

            if (value.StartsWith("0b", StringComparison.OrdinalIgnoreCase))
            {
                bytes = Convert.FromBase64String(value[2..]);
                return true;
            }
        }
        catch (FormatException)
        {
        }

        return false;
    }

    private sealed class ProtocolException(string message) : Exception(message);
}
