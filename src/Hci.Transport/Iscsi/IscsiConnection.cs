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
internal sealed class IscsiConnection
{
    private const uint ReservedTag = 0xFFFFFFFF;

    private readonly IscsiTarget _target;
    private readonly Socket _socket;
    private readonly ILogger _logger;
    private readonly SemaphoreSlim _sendLock = new(1, 1);
    private readonly byte[] _header = new byte[IscsiHeader.Length + 1024 + IscsiDigest.Length];
    private readonly byte[] _digest = new byte[IscsiDigest.Length];

    // Login text an initiator may spread over continued PDUs before the target gives up on it.
    private const int MaxLoginText = 64 * 1024;
    private readonly Dictionary<uint, PendingWrite> _writes = [];
    private readonly IscsiSessionParameters _session = new();
    private readonly IscsiSessionParameters _limits;
    private readonly Lock _snLock = new();
    private readonly CancellationTokenSource _closing = new();
    private uint _statSn;
    private uint _expCmdSn;
    private uint _nextTtt = 1;
    private long _bufferedBytes;

    // Data buffers a connection may hold at once (commands waiting for data or running): an initiator cannot make
    // the target allocate more by opening commands it never completes.
    private const long MaxBufferedBytes = 256L * 1024 * 1024;
    private bool _discovery;
    private int _nexus;
    private int _closed;
    private string _initiatorName = "";

    public IscsiConnection(IscsiTarget target, Socket socket)
    {
        _target = target;
        _socket = socket;
        _logger = target.Logger;
        var o = target.Options;
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

    private uint MaxCmdSn => _expCmdSn + (uint)_target.Options.CommandWindow - 1;

    public async Task RunAsync(CancellationToken stop)
    {
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(stop, _closing.Token);
        var token = linked.Token;
        try
        {
            if (await LoginAsync(token).ConfigureAwait(false))
            {
                await FullFeatureAsync(token).ConfigureAwait(false);
            }
        }
        catch (Exception e) when (e is IOException or SocketException or OperationCanceledException or ObjectDisposedException or ProtocolException)
        {
            if (e is ProtocolException)
            {
                _logger.LogWarning("iSCSI connection from {Peer} ({Initiator}): {Reason}; dropping it.", SafePeer(), _initiatorName, e.Message);
            }
        }
        catch (Exception e)
        {
            _logger.LogError(e, "iSCSI connection from {Peer} failed; dropping it.", SafePeer());
        }
        finally
        {
            await CloseAsync().ConfigureAwait(false);
        }
    }

    public Task CloseAsync()
    {
        if (Interlocked.Exchange(ref _closed, 1) == 0)
        {
            _closing.Cancel();
            try
            {
                _socket.Shutdown(SocketShutdown.Both);
            }
            catch (SocketException)
            {
            }

            _socket.Dispose();
            if (_nexus != 0)
            {
                foreach (var unit in _target.Luns.Values)
                {
                    unit.NexusLost(_nexus); // the session ends with its only connection
                }
            }

            lock (_writes)
            {
                foreach (var w in _writes.Values)
                {
                    Release(w.Task.Buffer);
                }

                _writes.Clear();
            }

            _target.Closed(this);
        }

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

    /// <summary>Reads one PDU: header (checked, digest verified) and data segment (bounded, digest verified).</summary>
    private async Task<(byte[] Data, int Length, bool DigestOk)> ReadPduAsync(int maxData, CancellationToken token)
    {
        await ReadExactly(_header.AsMemory(0, IscsiHeader.Length), token).ConfigureAwait(false);
        var h = new IscsiHeader(_header);
        int ahs = h.AdditionalHeaderLength;
        int dataLength = h.DataSegmentLength;
        if (ahs > 0)
        {
            await ReadExactly(_header.AsMemory(IscsiHeader.Length, ahs), token).ConfigureAwait(false);
        }

        if (_digestsActive && _session.HeaderDigest)
        {
            await ReadExactly(_digest, token).ConfigureAwait(false);
            if (!IscsiDigest.Verify(_header.AsSpan(0, IscsiHeader.Length + ahs), _digest))
            {
                throw new ProtocolException("header digest error");
            }
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

        bool ok = true;
        if (_digestsActive && _session.DataDigest && padded > 0)
        {
            await ReadExactly(_digest, token).ConfigureAwait(false);
            ok = IscsiDigest.Verify(data.AsSpan(0, padded), _digest);
        }

        return (data, dataLength, ok);
    }

    private async Task SendAsync(byte[] header, ReadOnlyMemory<byte> data, CancellationToken token)
    {
        var h = new IscsiHeader(header);
        h.DataSegmentLength = data.Length;
        int padded = (data.Length + 3) & ~3;
        bool headerDigest = _digestsActive && _session.HeaderDigest;
        bool dataDigest = _digestsActive && _session.DataDigest && padded > 0;
        int size = IscsiHeader.Length + (headerDigest ? 4 : 0) + padded + (dataDigest ? 4 : 0);
        var pdu = new byte[size];
        header.AsSpan(0, IscsiHeader.Length).CopyTo(pdu);
        int at = IscsiHeader.Length;
        if (headerDigest)
        {
            IscsiDigest.Write(IscsiDigest.Compute(pdu.AsSpan(0, IscsiHeader.Length)), pdu.AsSpan(at));
            at += 4;
        }

        data.Span.CopyTo(pdu.AsSpan(at));
        if (dataDigest)
        {
            IscsiDigest.Write(IscsiDigest.Compute(pdu.AsSpan(at, padded)), pdu.AsSpan(at + padded));
        }

        await _sendLock.WaitAsync(token).ConfigureAwait(false);
        try
        {
            int sent = 0;
            while (sent < pdu.Length)
            {
                sent += await _socket.SendAsync(pdu.AsMemory(sent), SocketFlags.None, token).ConfigureAwait(false);
            }
        }
        finally
        {
            _sendLock.Release();
        }
    }

    private (uint StatSn, uint ExpCmdSn, uint MaxCmdSn) NextStatus(bool advance = true)
    {
        lock (_snLock)
        {
            uint sn = _statSn;
            if (advance)
            {
                _statSn++;
            }

            return (sn, _expCmdSn, MaxCmdSn);
        }
    }

    private void Stamp(byte[] header, bool advance = true)
    {
        var (stat, exp, max) = NextStatus(advance);
        var h = new IscsiHeader(header);
        h.SetField(24, stat);
        h.SetField(28, exp);
        h.SetField(32, max);
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
            var (data, length, digestOk) = await ReadPduAsync(8192, token).ConfigureAwait(false);
            var h = new IscsiHeader(_header);
            if (h.Opcode != IscsiOpcode.LoginRequest || !digestOk)
            {
                throw new ProtocolException($"{h.Opcode} during login");
            }

            byte flags = h.Flags;
            bool transit = (flags & 0x80) != 0;
            bool more = (flags & 0x40) != 0;
            int csg = (flags >> 2) & 3;
            int nsg = flags & 3;
            byte versionMax = _header[2];
            byte versionMin = _header[3];
            uint itt = h.InitiatorTaskTag;
            uint cmdSn = h.Field(24);
            if (stage < 0)
            {
                _expCmdSn = cmdSn;
                _statSn = h.Field(28);
            }

            var reply = new byte[IscsiHeader.Length];
            var r = new IscsiHeader(reply);
            r.Opcode = IscsiOpcode.LoginResponse;
            _header.AsSpan(8, 8).CopyTo(reply.AsSpan(8)); // ISID and TSIH
            r.InitiatorTaskTag = itt;

            async Task Fail(byte statusClass, byte detail, string why)
            {
                _logger.LogInformation("iSCSI login from {Peer} refused: {Why}.", SafePeer(), why);
                reply[1] = 0;
                reply[36] = statusClass;
                reply[37] = detail;
                Stamp(reply, advance: false);
                await SendAsync(reply, default, token).ConfigureAwait(false);
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
                reply[1] = (byte)(csg << 2);
                Stamp(reply, advance: false);
                await SendAsync(reply, default, token).ConfigureAwait(false);
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
            _logger.LogDebug("iSCSI login from {Peer}, stage {Stage}: {Keys}", SafePeer(), csg, string.Join(' ', pairs.Select(p => $"{p.Key}={p.Value}")));
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

            reply[1] = (byte)((grant ? 0x80 : 0) | (csg << 2) | (grant ? nsg : 0));
            if (grant && nsg == 3)
            {
                BinaryPrimitives.WriteUInt16BigEndian(reply.AsSpan(14), _target.NextTsih());
                _nexus = _target.NextNexus();
            }

            // The data segment must not exceed what the initiator receives; login text is small.
            byte[] body = IscsiText.Format(response);
            Stamp(reply, advance: grant && nsg == 3);
            await SendAsync(reply, body, token).ConfigureAwait(false);
            if (grant && nsg == 3)
            {
                _digestsActive = true; // negotiated digests apply from the full feature phase on
                _logger.LogInformation("iSCSI {Kind} session for {Initiator} from {Peer} (header digest {Header}, data digest {Data}).", _discovery ? "discovery" : "normal", _initiatorName, SafePeer(), _session.HeaderDigest, _session.DataDigest);
                return true;
            }

            stage = grant ? nsg : csg;
        }
    }

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
            if (o.MutualChapUser == null || theirId == null || theirChallenge == null || !byte.TryParse(theirId, out byte mutualId)
                || !TryDecodeChap(theirChallenge, out byte[] c) || c.Length == 0 || theirChallenge == challenge)
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

    // ---- full feature phase ----

    private async Task FullFeatureAsync(CancellationToken token)
    {
        while (!token.IsCancellationRequested)
        {
            var (data, length, digestOk) = await ReadPduAsync(_session.MaxRecvDataSegmentLength, token).ConfigureAwait(false);
            var bhs = _header.AsSpan(0, IscsiHeader.Length).ToArray();
            var h = new IscsiHeader(bhs);
            if (!digestOk)
            {
                await RejectAsync(bhs, 0x02, token).ConfigureAwait(false); // data digest error: the PDU is discarded
                continue;
            }

            if (_discovery && h.Opcode is not (IscsiOpcode.TextRequest or IscsiOpcode.LogoutRequest or IscsiOpcode.NopOut))
            {
                await RejectAsync(bhs, 0x05, token).ConfigureAwait(false);
                continue;
            }

            switch (h.Opcode)
            {
                case IscsiOpcode.NopOut:
                    AcceptCmdSn(h);
                    if (h.InitiatorTaskTag != ReservedTag)
                    {
                        var reply = new byte[IscsiHeader.Length];
                        var r = new IscsiHeader(reply) { Opcode = IscsiOpcode.NopIn, Final = true, Lun = h.Lun, InitiatorTaskTag = h.InitiatorTaskTag };
                        r.SetField(20, ReservedTag);
                        Stamp(reply);
                        await SendAsync(reply, data.AsMemory(0, length), token).ConfigureAwait(false);
                    }

                    break;
                case IscsiOpcode.ScsiCommand:
                    await CommandAsync(bhs, data, length, token).ConfigureAwait(false);
                    break;
                case IscsiOpcode.DataOut:
                    await DataOutAsync(bhs, data, length, token).ConfigureAwait(false);
                    break;
                case IscsiOpcode.TextRequest:
                    await TextAsync(bhs, data, length, token).ConfigureAwait(false);
                    break;
                case IscsiOpcode.TaskManagementRequest:
                    await TaskManagementAsync(bhs, token).ConfigureAwait(false);
                    break;
                case IscsiOpcode.LogoutRequest:
                {
                    AcceptCmdSn(h);
                    var reply = new byte[IscsiHeader.Length];
                    var r = new IscsiHeader(reply) { Opcode = IscsiOpcode.LogoutResponse, Final = true, InitiatorTaskTag = h.InitiatorTaskTag };
                    Stamp(reply);
                    await SendAsync(reply, default, token).ConfigureAwait(false);
                    return;
                }

                default:
                    await RejectAsync(bhs, 0x05, token).ConfigureAwait(false); // command not supported
                    break;
            }
        }
    }

    private bool AcceptCmdSn(IscsiHeader h)
    {
        uint cmdSn = h.Field(24);
        lock (_snLock)
        {
            if (h.Immediate)
            {
                return true;
            }

            // Outside [ExpCmdSN, MaxCmdSN] (serial arithmetic): silently ignored, as RFC 7143 says.
            if ((int)(cmdSn - _expCmdSn) < 0 || (int)(cmdSn - MaxCmdSn) > 0)
            {
                return false;
            }

            if (cmdSn == _expCmdSn)
            {
                _expCmdSn++;
            }

            return true;
        }
    }

    private async Task RejectAsync(byte[] offending, byte reason, CancellationToken token)
    {
        var reply = new byte[IscsiHeader.Length];
        var r = new IscsiHeader(reply) { Opcode = IscsiOpcode.Reject, Final = true, InitiatorTaskTag = ReservedTag };
        reply[2] = reason;
        Stamp(reply);
        await SendAsync(reply, offending.AsMemory(0, IscsiHeader.Length), token).ConfigureAwait(false);
    }

    private static int DecodeLun(ulong lun)
    {
        int b0 = (int)(lun >> 56);
        int b1 = (int)(lun >> 48) & 0xFF;
        return (b0 >> 6) switch
        {
            0 => b0 == 0 ? b1 : -1,
            1 => ((b0 & 0x3F) << 8) | b1,
            _ => -1,
        };
    }

    private static ulong EncodeLun(int lun) => lun < 256 ? (ulong)lun << 48 : (ulong)(0x4000 | lun) << 48;

    private async Task CommandAsync(byte[] bhs, byte[] data, int length, CancellationToken token)
    {
        var h = new IscsiHeader(bhs);
        if (!AcceptCmdSn(h))
        {
            return;
        }

        bool read = (h.Flags & 0x40) != 0;
        bool write = (h.Flags & 0x20) != 0;
        int expected = (int)Math.Min(h.Field(20), int.MaxValue);
        var task = new ScsiTask { ExpectedLength = expected, DataOut = write, Nexus = _nexus };
        bhs.AsSpan(32, 16).CopyTo(task.Cdb);
        int lun = DecodeLun(h.Lun);
        int maxTransfer = lun >= 0 && _target.Luns.TryGetValue(lun, out var unit) ? unit.MaxTransferBytes * 2 : 1 << 20;
        if ((read && write) || expected > Math.Max(maxTransfer, 1 << 20) || (write && length > expected) || (!write && length > 0))
        {
            task.Fail(SenseKey.IllegalRequest, 0x24, 0);
            await RespondAsync(bhs, task, 0, token).ConfigureAwait(false);
            return;
        }

        if (expected > 0)
        {
            long size = (expected + 4095L) & ~4095L;
            if (Interlocked.Add(ref _bufferedBytes, size) > MaxBufferedBytes)
            {
                Interlocked.Add(ref _bufferedBytes, -size);
                task.Status = ScsiStatus.TaskSetFull;
                await RespondAsync(bhs, task, 0, token).ConfigureAwait(false);
                return;
            }

            task.Buffer = new AlignedBuffer((int)size);
        }

        if (write && expected > 0)
        {
            data.AsSpan(0, length).CopyTo(task.Buffer!.Span);
            int unsolicited = _session.InitialR2T ? length : Math.Min(expected, _session.FirstBurstLength);
            if (length < expected)
            {
                var pending = new PendingWrite(bhs, task, lun, expected) { Received = length, UnsolicitedEnd = (h.Flags & 0x80) != 0 ? length : unsolicited };
                bool added;
                lock (_writes)
                {
                    added = _writes.TryAdd(h.InitiatorTaskTag, pending);
                }

                if (!added)
                {
                    // A task tag already in use by a write still taking data: a protocol error (RFC 7143, 11.2.1.8).
                    Release(task.Buffer);
                    await RejectAsync(bhs, 0x04, token).ConfigureAwait(false);
                    return;
                }

                if (pending.Received >= pending.UnsolicitedEnd)
                {
                    await SendR2TAsync(pending, token).ConfigureAwait(false);
                }

                return;
            }
        }

        _ = ExecuteAsync(bhs, task, lun, token);
    }

    private async Task DataOutAsync(byte[] bhs, byte[] data, int length, CancellationToken token)
    {
        var h = new IscsiHeader(bhs);
        PendingWrite? pending;
        lock (_writes)
        {
            _writes.TryGetValue(h.InitiatorTaskTag, out pending);
        }

        uint offset = h.Field(40);
        if (pending == null || offset > (uint)pending.Expected || length > pending.Expected - (int)offset)
        {
            await RejectAsync(bhs, 0x09, token).ConfigureAwait(false); // invalid PDU field
            return;
        }

        data.AsSpan(0, length).CopyTo(pending.Task.Buffer!.Span[(int)offset..]);
        pending.Received += length;
        if (pending.Received >= pending.Expected)
        {
            lock (_writes)
            {
                _writes.Remove(h.InitiatorTaskTag);
            }

            _ = ExecuteAsync(pending.Command, pending.Task, pending.Lun, token);
            return;
        }

        if (h.Final && pending.Received >= pending.NextR2TEnd)
        {
            await SendR2TAsync(pending, token).ConfigureAwait(false);
        }
    }

    private async Task SendR2TAsync(PendingWrite pending, CancellationToken token)
    {
        int offset = Math.Max(pending.Received, pending.NextR2TEnd);
        int size = Math.Min(_session.MaxBurstLength, pending.Expected - offset);
        if (size <= 0)
        {
            return;
        }

        pending.NextR2TEnd = offset + size;
        var h = new IscsiHeader(pending.Command);
        var reply = new byte[IscsiHeader.Length];
        var r = new IscsiHeader(reply) { Opcode = IscsiOpcode.ReadyToTransfer, Final = true, Lun = h.Lun, InitiatorTaskTag = h.InitiatorTaskTag };
        r.SetField(20, _nextTtt++);
        Stamp(reply, advance: false);
        r.SetField(36, (uint)pending.R2TSn++);
        r.SetField(40, (uint)offset);
        r.SetField(44, (uint)size);
        await SendAsync(reply, default, token).ConfigureAwait(false);
    }

    private async Task ExecuteAsync(byte[] bhs, ScsiTask task, int lun, CancellationToken token)
    {
        try
        {
            if (task.Cdb[0] == 0xA0)
            {
                ReportLuns(task);
            }
            else if (lun < 0 || !_target.Luns.TryGetValue(lun, out var disk))
            {
                if (task.Cdb[0] == 0x12 && task.Buffer != null)
                {
                    // INQUIRY to a LUN that does not exist: peripheral qualifier 3, device type 1Fh.
                    task.Buffer.Span[..Math.Min(36, task.ExpectedLength)].Clear();
                    task.Buffer.Span[0] = 0x7F;
                    task.DataLength = 36;
                }
                else
                {
                    task.Fail(SenseKey.IllegalRequest, 0x25, 0); // LOGICAL UNIT NOT SUPPORTED
                }
            }
            else
            {
                await disk.ExecuteAsync(task).ConfigureAwait(false);
            }

            await RespondAsync(bhs, task, task.DataOut ? 0 : Math.Min(task.DataLength, task.ExpectedLength), token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or SocketException or OperationCanceledException or ObjectDisposedException)
        {
        }
        finally
        {
            Release(task.Buffer);
        }
    }

    private void ReportLuns(ScsiTask task)
    {
        var luns = _target.Luns.Keys.Order().ToArray();
        var d = new byte[8 + (8 * luns.Length)];
        BinaryPrimitives.WriteUInt32BigEndian(d, (uint)(8 * luns.Length));
        for (int i = 0; i < luns.Length; i++)
        {
            BinaryPrimitives.WriteUInt64BigEndian(d.AsSpan(8 + (8 * i)), EncodeLun(luns[i]));
        }

        int n = Math.Min(d.Length, task.ExpectedLength);
        if (n > 0)
        {
            d.AsSpan(0, n).CopyTo(task.Buffer!.Span);
        }

        task.DataLength = d.Length;
    }

    private void Release(AlignedBuffer? buffer)
    {
        if (buffer != null)
        {
            Interlocked.Add(ref _bufferedBytes, -buffer.Length);
            ((IDisposable)buffer).Dispose();
        }
    }

    private async Task RespondAsync(byte[] bhs, ScsiTask task, int dataIn, CancellationToken token)
    {
        ulong lun = BinaryPrimitives.ReadUInt64BigEndian(bhs.AsSpan(8));
        uint itt = BinaryPrimitives.ReadUInt32BigEndian(bhs.AsSpan(16));
        int expected = task.ExpectedLength;
        int wanted = task.DataOut ? (task.DataLength > 0 ? task.DataLength : expected) : task.DataLength;
        uint residual = (uint)Math.Abs(wanted - expected);
        byte residualFlag = wanted < expected ? (byte)0x02 : wanted > expected ? (byte)0x04 : (byte)0;
        bool good = task.Status == ScsiStatus.Good;
        if (dataIn > 0)
        {
            int max = _session.MaxSendDataSegmentLength;
            uint dataSn = 0;
            for (int offset = 0; offset < dataIn; offset += max)
            {
                int n = Math.Min(max, dataIn - offset);
                bool last = offset + n >= dataIn;
                byte[] pdu = DataIn(lun, itt, last, good, task.Status, residualFlag, residual, dataSn++, offset);
                await SendAsync(pdu, task.Buffer!.Memory.Slice(offset, n), token).ConfigureAwait(false);
            }

            if (good)
            {
                return; // the status went with the last Data-In
            }
        }

        byte[] sense = [];
        if (!good)
        {
            var s = task.Sense;
            sense = new byte[2 + s.Length];
            BinaryPrimitives.WriteUInt16BigEndian(sense, (ushort)s.Length);
            s.CopyTo(sense.AsSpan(2));
        }

        await SendAsync(Response(itt, task.Status, residualFlag, residual), sense, token).ConfigureAwait(false);
    }

    private byte[] DataIn(ulong lun, uint itt, bool last, bool good, byte status, byte residualFlag, uint residual, uint dataSn, int offset)
    {
        var pdu = new byte[IscsiHeader.Length];
        var p = new IscsiHeader(pdu) { Opcode = IscsiOpcode.DataIn, Lun = lun, InitiatorTaskTag = itt };
        p.SetField(20, ReservedTag);
        bool withStatus = last && good;
        if (withStatus)
        {
            pdu[1] = (byte)(0x80 | 0x01 | residualFlag);
            pdu[3] = status;
            Stamp(pdu);
            p.SetField(44, residual);
        }
        else
        {
            pdu[1] = last ? (byte)0x80 : (byte)0;
            Stamp(pdu, advance: false);
        }

        p.SetField(36, dataSn);
        p.SetField(40, (uint)offset);
        return pdu;
    }

    private byte[] Response(uint itt, byte status, byte residualFlag, uint residual)
    {
        var reply = new byte[IscsiHeader.Length];
        var r = new IscsiHeader(reply) { Opcode = IscsiOpcode.ScsiResponse, InitiatorTaskTag = itt };
        reply[1] = (byte)(0x80 | residualFlag);
        reply[3] = status;
        Stamp(reply);
        r.SetField(44, residual);
        return reply;
    }

    private async Task TextAsync(byte[] bhs, byte[] data, int length, CancellationToken token)
    {
        var h = new IscsiHeader(bhs);
        AcceptCmdSn(h);
        var pairs = new List<KeyValuePair<string, string>>();
        var response = new List<KeyValuePair<string, string>>();
        if (IscsiText.Parse(data.AsSpan(0, length), pairs) != IscsiTextError.None)
        {
            await RejectAsync(bhs, 0x04, token).ConfigureAwait(false);
            return;
        }

        foreach (var (key, value) in pairs)
        {
            if (key == "SendTargets")
            {
                if (value is "All" or "" || value == _target.Options.TargetName)
                {
                    response.Add(new("TargetName", _target.Options.TargetName));
                    var ep = _target.LocalEndPoint;
                    var local = (System.Net.IPEndPoint?)_socket.LocalEndPoint;
                    var address = local?.Address ?? ep.Address;
                    if (address.IsIPv4MappedToIPv6)
                    {
                        address = address.MapToIPv4();
                    }

                    string host = address.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{address}]" : address.ToString();
                    response.Add(new("TargetAddress", $"{host}:{ep.Port},1"));
                }
            }
            else
            {
                IscsiNegotiation.Respond([new(key, value)], _limits, _session, response);
            }
        }

        var reply = new byte[IscsiHeader.Length];
        var r = new IscsiHeader(reply) { Opcode = IscsiOpcode.TextResponse, Final = true, Lun = h.Lun, InitiatorTaskTag = h.InitiatorTaskTag };
        r.SetField(20, ReservedTag);
        Stamp(reply);
        await SendAsync(reply, IscsiText.Format(response), token).ConfigureAwait(false);
    }

    private async Task TaskManagementAsync(byte[] bhs, CancellationToken token)
    {
        var h = new IscsiHeader(bhs);
        AcceptCmdSn(h);
        int function = bhs[1] & 0x7F;
        byte result = function switch
        {
            1 => 0, // ABORT TASK: commands here run to completion quickly; nothing is left to abort
            2 => 0, // ABORT TASK SET
            5 => 0, // LOGICAL UNIT RESET
            6 => 0, // TARGET WARM RESET
            3 or 4 => 0, // CLEAR ACA, CLEAR TASK SET
            7 => 3, // TARGET COLD RESET: not supported here (would drop every session)
            _ => 5, // function not supported
        };
        if (function == 5 && _target.Luns.TryGetValue(DecodeLun(h.Lun), out var reset))
        {
            reset.Reset(); // unit attention to every nexus, SPC-2 reservations released
        }
        else if (function == 6)
        {
            foreach (var unit in _target.Luns.Values)
            {
                unit.Reset();
            }
        }

        if (function is 1 or 2 or 3 or 4 or 5 or 6)
        {
            uint referenced = h.Field(20);
            lock (_writes)
            {
                if (function == 1 && _writes.Remove(referenced, out var w))
                {
                    Release(w.Task.Buffer);
                }
                else if (function != 1)
                {
                    foreach (var w2 in _writes.Values)
                    {
                        Release(w2.Task.Buffer);
                    }

                    _writes.Clear();
                }
            }
        }

        var reply = new byte[IscsiHeader.Length];
        var r = new IscsiHeader(reply) { Opcode = IscsiOpcode.TaskManagementResponse, Final = true, InitiatorTaskTag = h.InitiatorTaskTag };
        reply[2] = result;
        Stamp(reply);
        await SendAsync(reply, default, token).ConfigureAwait(false);
    }

    private sealed class PendingWrite(byte[] command, ScsiTask task, int lun, int expected)
    {
        public byte[] Command { get; } = command;

        public ScsiTask Task { get; } = task;

        public int Lun { get; } = lun;

        public int Expected { get; } = expected;

        public int Received { get; set; }

        public int UnsolicitedEnd { get; set; }

        public int NextR2TEnd { get; set; }

        public int R2TSn { get; set; }
    }

    private sealed class ProtocolException(string message) : Exception(message);
}
