using System.Net.Sockets;

namespace Hci.Transport.Iscsi;

/// <summary>
/// The full feature phase's PDU handlers other than SCSI commands and task management (SPDK's <c>iscsi.c</c>):
/// CmdSN ordering, NOP, Text, Logout, Reject, and the fields every answer carries.
/// </summary>
internal sealed unsafe partial class IscsiConnection
{
    private readonly IscsiCommandWindow _window;
    private Dictionary<uint, byte[]>? _held;
    private long _heldBytes;
    private bool _runningHeld;

    /// <summary>Handles one whole PDU from the reader.</summary>
    private void Handle(in ReceivedPdu pdu)
    {
        var bhs = pdu.Header;
        var data = pdu.Data;
        var h = new IscsiHeader(bhs);
        if (!pdu.DataDigestOk)
        {
            Reject(bhs, IscsiRejectReason.DataDigestError); // the PDU is discarded; the initiator may resend it
            return;
        }

        if (_discovery && h.Opcode is not (IscsiOpcode.TextRequest or IscsiOpcode.LogoutRequest or IscsiOpcode.NopOut))
        {
            Reject(bhs, IscsiRejectReason.CommandNotSupported);
            return;
        }

        // Non-immediate requests run in CmdSN order (RFC 7143, 3.2.2.1): one past a gap waits for the gap to fill;
        // one below ExpCmdSN (a resend of a command already run) or past MaxCmdSN is dropped.
        if (h.Opcode is IscsiOpcode.ScsiCommand or IscsiOpcode.NopOut or IscsiOpcode.TextRequest or IscsiOpcode.TaskManagementRequest or IscsiOpcode.LogoutRequest
            && !h.Immediate && !(h.Opcode == IscsiOpcode.NopOut && h.InitiatorTaskTag == ReservedTag))
        {
            uint cmdSn = new NopOutPdu(bhs).CmdSn; // at the same place in every request
            switch (_window.Order(cmdSn))
            {
                case CmdSnOrder.Outside:
                    return;
                case CmdSnOrder.Ahead:
                    Hold(cmdSn, bhs, data);
                    return;
            }
        }

        Run(bhs, data);
        if (_held != null && !_runningHeld)
        {
            // Requests that waited for this one run now, in order.
            _runningHeld = true;
            try
            {
                while (!_loggedOut && _held.Remove(_window.ExpCmdSn, out var next))
                {
                    _heldBytes -= next.Length;
                    Run(next.AsSpan(0, IscsiHeader.Length), next.AsSpan(IscsiHeader.Length));
                }
            }
            finally
            {
                _runningHeld = false;
            }
        }
    }

    /// <summary>Keeps a copy of a request that arrived past a CmdSN gap (rare: only an initiator in error makes one).</summary>
    private void Hold(uint cmdSn, Span<byte> bhs, Span<byte> data)
    {
        _held ??= [];
        if (_held.ContainsKey(cmdSn))
        {
            return; // a resend of one already waiting
        }

        long bytes = IscsiHeader.Length + data.Length;
        if (_heldBytes + bytes > 2L * _session.MaxRecvDataSegmentLength * 8)
        {
            throw new ProtocolException($"too many commands held past a CmdSN gap (waiting for CmdSN {_window.ExpCmdSn})");
        }

        var copy = new byte[bytes];
        bhs[..IscsiHeader.Length].CopyTo(copy);
        data.CopyTo(copy.AsSpan(IscsiHeader.Length));
        _held[cmdSn] = copy;
        _heldBytes += bytes;
    }

    private void Run(Span<byte> bhs, Span<byte> data)
    {
        switch (new IscsiHeader(bhs).Opcode)
        {
            case IscsiOpcode.ScsiCommand:
                Command(bhs, data);
                break;
            case IscsiOpcode.DataOut:
                DataOut(bhs, data);
                break;
            case IscsiOpcode.NopOut:
                NopOut(bhs, data);
                break;
            case IscsiOpcode.TextRequest:
                Text(bhs, data);
                break;
            case IscsiOpcode.TaskManagementRequest:
                TaskManagement(bhs);
                break;
            case IscsiOpcode.LogoutRequest:
                Logout(bhs);
                break;
            default:
                Reject(bhs, IscsiRejectReason.CommandNotSupported);
                break;
        }
    }

    /// <summary>Accepts a request's CmdSN; false when it is to be ignored.</summary>
    private bool AcceptCmdSn(Span<byte> bhs) => _window.Accept(new NopOutPdu(bhs).CmdSn, new IscsiHeader(bhs).Immediate);

    private void Logout(Span<byte> bhs)
    {
        AcceptCmdSn(bhs);
        Span<byte> reply = stackalloc byte[IscsiHeader.Length];
        var r = LogoutResponsePdu.Create(reply);
        r.InitiatorTaskTag = new LogoutRequestPdu(bhs).InitiatorTaskTag;
        Stamp(reply);
        QueuePdu(reply, null, 0, copy: true);
        _loggedOut = true;
    }

    private void NopOut(Span<byte> bhs, Span<byte> data)
    {
        var ping = new NopOutPdu(bhs);
        AcceptCmdSn(bhs);
        if (ping.InitiatorTaskTag == ReservedTag)
        {
            if (ping.TargetTransferTag == _pingTag)
            {
                _pingSentAt = 0; // the answer to our ping
            }

            return;
        }

        Span<byte> reply = stackalloc byte[IscsiHeader.Length];
        var r = NopInPdu.Create(reply);
        r.Lun = ping.Lun;
        r.InitiatorTaskTag = ping.InitiatorTaskTag;
        r.TargetTransferTag = ReservedTag;
        Stamp(reply);
        int echo = Math.Min(data.Length, Math.Min(_session.MaxSendDataSegmentLength, MaxCopiedSegment));
        fixed (byte* d = data)
        {
            QueuePdu(reply, d, echo, copy: true);
        }
    }

    private void Text(Span<byte> bhs, Span<byte> data)
    {
        var request = new TextRequestPdu(bhs);
        AcceptCmdSn(bhs);
        var pairs = new List<KeyValuePair<string, string>>();
        var response = new List<KeyValuePair<string, string>>();
        if (IscsiText.Parse(data, pairs) != IscsiTextError.None)
        {
            Reject(bhs, IscsiRejectReason.ProtocolError);
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
            else if (key == "MaxRecvDataSegmentLength")
            {
                // The one operational key the full feature phase may renegotiate (RFC 7143, 13.12): the initiator's
                // declaration; what this side sends stays within its output arena.
                IscsiNegotiation.Respond([new(key, value)], _limits, _session, response);
                _session.MaxSendDataSegmentLength = Math.Min(_session.MaxSendDataSegmentLength, MaxCopiedSegment);
            }
            else
            {
                // Login-only keys (digests, burst lengths, names, CHAP ...) and anything unknown cannot change now.
                response.Add(new(key, IscsiNegotiation.LoginKeys.Contains(key) || IsOperational(key) ? "Reject" : "NotUnderstood"));
            }
        }

        Span<byte> reply = stackalloc byte[IscsiHeader.Length];
        var r = TextResponsePdu.Create(reply);
        r.Lun = request.Lun;
        r.InitiatorTaskTag = request.InitiatorTaskTag;
        r.TargetTransferTag = ReservedTag;
        Stamp(reply);
        byte[] body = IscsiText.Format(response);
        fixed (byte* b = body)
        {
            QueuePdu(reply, b, Math.Min(body.Length, Math.Min(_session.MaxSendDataSegmentLength, MaxCopiedSegment)), copy: true);
        }
    }

    private static bool IsOperational(string key) => key is "HeaderDigest" or "DataDigest" or "MaxConnections" or "InitialR2T" or "ImmediateData"
        or "MaxBurstLength" or "FirstBurstLength" or "DefaultTime2Wait" or "DefaultTime2Retain" or "MaxOutstandingR2T" or "DataPDUInOrder"
        or "DataSequenceInOrder" or "ErrorRecoveryLevel" or "IFMarker" or "OFMarker" or "IFMarkInt" or "OFMarkInt";

    // The largest data segment copied into the output (text, a ping's echo, sense).
    private int MaxCopiedSegment => _writer.MaxCopiedSegment;

    private void Reject(Span<byte> offending, IscsiRejectReason reason)
    {
        Span<byte> reply = stackalloc byte[IscsiHeader.Length];
        var r = RejectPdu.Create(reply);
        r.Reason = reason;
        r.InitiatorTaskTag = ReservedTag;
        Stamp(reply);
        fixed (byte* o = offending)
        {
            QueuePdu(reply, o, IscsiHeader.Length, copy: true);
        }
    }

    /// <summary>Fills StatSN, ExpCmdSN and MaxCmdSN; a response that carries a status takes the next StatSN.</summary>
    private void Stamp(Span<byte> header, bool advance = true)
    {
        var h = new NopInPdu(header); // at the same place in every target PDU
        h.StatSn = advance ? _statSn++ : _statSn;
        h.ExpCmdSn = _window.ExpCmdSn;
        h.MaxCmdSn = _window.MaxCmdSn;
    }

    /// <summary>Adds one PDU to the output (see <see cref="IscsiPduWriter.TryQueue(ReadOnlySpan{byte}, byte*, int, bool)"/>).</summary>
    private void QueuePdu(ReadOnlySpan<byte> header, byte* data, int length, bool copy)
    {
        if (!_writer.TryQueue(header, data, length, copy))
        {
            throw new ProtocolException($"the initiator does not read its answers ({_writer.PendingBytes} bytes waiting)");
        }
    }
}
