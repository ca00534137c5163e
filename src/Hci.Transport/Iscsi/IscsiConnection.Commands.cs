using System.Buffers.Binary;
using Hci.Transport.Scsi;
using Microsoft.Extensions.Logging;

namespace Hci.Transport.Iscsi;

/// <summary>
/// SCSI command handling (SPDK's <c>iscsi_pdu_hdr_op_scsi</c> and <c>iscsi_pdu_payload_op_data</c>): a command
/// takes a task, collects its write data (immediate, unsolicited, then solicited by R2T), runs, and is answered
/// with Data-In and a SCSI Response.
/// </summary>
internal sealed unsafe partial class IscsiConnection
{
    private void Command(Span<byte> bhs, Span<byte> data)
    {
        if (!AcceptCmdSn(bhs))
        {
            return;
        }

        var h = new ScsiCommandPdu(bhs);
        uint itt = h.InitiatorTaskTag;
        bool read = h.Read;
        bool write = h.Write;
        int expected = (int)Math.Min(h.ExpectedDataTransferLength, int.MaxValue);
        int lun = ScsiLunMap.Decode(h.Lun);
        if (_target.LunMap.Version != _lunVersion)
        {
            SyncLunPaths();
        }

        IscsiLunPath? path = lun >= 0 ? _paths.GetValueOrDefault(lun) : null;
        int maxTransfer = Math.Max(path != null ? path.Disk.MaxTransferBytes * 2 : 0, 1 << 20); // * 2: COMPARE AND WRITE
        if ((read && write) || expected > maxTransfer || (write && data.Length > expected) || (!write && data.Length > 0))
        {
            QueueStatus(itt, ScsiStatus.CheckCondition, SenseKey.IllegalRequest, 0x24); // INVALID FIELD IN CDB
            return;
        }

        // A command that takes data must come with the W bit: without it, it would write (and answer with) whatever
        // the command buffer held before. A READ marked as a write is served with no Data-In, as other targets do
        // (libiscsi's Read10Invalid expects GOOD), so it leaks nothing.
        if (expected > 0 && !write && ScsiDisk.DirectionOf(h.Cdb) == ScsiDataDirection.Out)
        {
            QueueStatus(itt, ScsiStatus.CheckCondition, SenseKey.IllegalRequest, 0x24);
            return;
        }

        var s = _pool.Take(expected);
        if (s == null)
        {
            QueueStatus(itt, ScsiStatus.TaskSetFull);
            return;
        }

        if (!_tasks.TryAdd(itt, s))
        {
            // A task tag still in use: a protocol error (RFC 7143, 11.2.1.8).
            _pool.Return(s);
            Reject(bhs, IscsiRejectReason.ProtocolError);
            return;
        }

        s.LunField = h.Lun;
        s.Itt = itt;
        s.Lun = lun;
        s.Path = path;
        s.Owner = this;
        var task = s.Task;
        task.Reset();
        h.Cdb.CopyTo(task.Cdb);
        task.ExpectedLength = expected;
        task.DataOut = write;
        task.Nexus = _nexus;
        task.InitiatorPort = _initiatorPort;
        task.Buffer = expected > 0 ? s.Buffer : null;
        if (write && expected > 0)
        {
            data.CopyTo(s.Buffer!.Span);
            s.Received = data.Length;
            s.NextDataSn = 0;
            s.SequenceError = false;
            s.NextR2TEnd = 0;
            s.R2TSn = 0;
            s.UnsolicitedEnd = h.Final ? data.Length : _session.InitialR2T ? data.Length : Math.Min(expected, _session.FirstBurstLength);
            if (s.Received < expected)
            {
                s.State = IscsiTaskState.AwaitingData;
                if (s.Received >= s.UnsolicitedEnd)
                {
                    SendR2T(s);
                }

                return;
            }
        }

        Dispatch(s);
    }

    private void DataOut(Span<byte> bhs, Span<byte> data)
    {
        var h = new DataOutPdu(bhs);
        if (!_tasks.TryGetValue(h.InitiatorTaskTag, out var s) || s.State != IscsiTaskState.AwaitingData)
        {
            Reject(bhs, IscsiRejectReason.InvalidPduField); // no such task takes data
            return;
        }

        uint offset = h.BufferOffset;
        int expected = s.Task.ExpectedLength;
        if (offset > (uint)expected || data.Length > expected - (int)offset)
        {
            Reject(bhs, IscsiRejectReason.InvalidPduField);
            return;
        }

        // Data PDUs come in order (DataPDUInOrder and DataSequenceInOrder are Yes): each carries the next DataSN
        // and starts where the last ended, so what was received is exactly the first Received bytes. At
        // ErrorRecoveryLevel 0 a gap or a repeat cannot be repaired: the command ends with CHECK CONDITION once its
        // data is in, and the session goes on.
        uint dataSn = h.DataSn;
        if ((dataSn != s.NextDataSn || (_session.DataPduInOrder && offset != (uint)s.Received)) && !s.SequenceError)
        {
            // Warned once per connection: an initiator must not be able to flood the log.
            if (_warnedDataSn)
            {
                IscsiLog.DataOutOutOfOrderAgain(_logger, _initiatorName, dataSn, offset, s.Itt, s.NextDataSn, s.Received);
            }
            else
            {
                IscsiLog.DataOutOutOfOrder(_logger, _initiatorName, dataSn, offset, s.Itt, s.NextDataSn, s.Received);
            }

            _warnedDataSn = true;
            s.SequenceError = true;
        }

        s.NextDataSn++;
        data.CopyTo(s.Buffer!.Span[(int)offset..]);
        s.Received += data.Length;
        if (s.Received >= expected)
        {
            if (s.SequenceError)
            {
                _commands++;
                s.State = IscsiTaskState.Running;
                s.Task.Fail(SenseKey.AbortedCommand, 0x4B, 0x00); // DATA PHASE ERROR
                Complete(s);
                return;
            }

            Dispatch(s);
            return;
        }

        if (h.Final && s.Received >= s.NextR2TEnd)
        {
            SendR2T(s);
        }
    }

    private void SendR2T(IscsiTask s)
    {
        int offset = Math.Max(s.Received, s.NextR2TEnd);
        int size = Math.Min(_session.MaxBurstLength, s.Task.ExpectedLength - offset);
        if (size <= 0)
        {
            return;
        }

        s.NextR2TEnd = offset + size;
        s.NextDataSn = 0; // each R2T starts a new data sequence
        Span<byte> pdu = stackalloc byte[IscsiHeader.Length];
        var r = ReadyToTransferPdu.Create(pdu);
        r.Lun = s.LunField;
        r.InitiatorTaskTag = s.Itt;
        r.TargetTransferTag = NextTargetTransferTag();
        Stamp(pdu, advance: false);
        r.R2TSn = (uint)s.R2TSn++;
        r.BufferOffset = (uint)offset;
        r.DesiredDataTransferLength = (uint)size;
        QueuePdu(pdu, null, 0, copy: true);
    }

    private uint NextTargetTransferTag()
    {
        uint ttt = _nextTtt++;
        return ttt == ReservedTag ? _nextTtt++ : ttt;
    }

    /// <summary>Answers a command: its Data-In (from its own buffer, no copy), then its status.</summary>
    private void Respond(IscsiTask s)
    {
        var task = s.Task;
        uint itt = s.Itt;
        int expected = task.ExpectedLength;
        int dataIn = task.DataOut ? 0 : Math.Min(task.DataLength, expected);
        int wanted = task.DataOut ? (task.DataLength > 0 ? task.DataLength : expected) : task.DataLength;
        uint residual = (uint)Math.Abs((long)wanted - expected);
        bool underflow = wanted < expected;
        bool overflow = wanted > expected;
        bool good = task.Status == ScsiStatus.Good;
        s.State = IscsiTaskState.Sending;
        if (dataIn > 0 && task.Buffer != null)
        {
            dataIn = Math.Min(dataIn, task.Buffer.Length);
            int max = _session.MaxSendDataSegmentLength;
            uint dataSn = 0;
            Span<byte> pdu = stackalloc byte[IscsiHeader.Length];
            for (int offset = 0; offset < dataIn; offset += max)
            {
                int n = Math.Min(max, dataIn - offset);
                bool last = offset + n >= dataIn;
                var p = DataInPdu.Create(pdu);
                p.Lun = s.LunField;
                p.InitiatorTaskTag = itt;
                p.TargetTransferTag = ReservedTag;
                p.Final = last;
                if (last && good)
                {
                    p.HasStatus = true; // the status rides in the last Data-In
                    p.ResidualUnderflow = underflow;
                    p.ResidualOverflow = overflow;
                    p.Status = task.Status;
                    Stamp(pdu);
                    p.ResidualCount = residual;
                }
                else
                {
                    Stamp(pdu, advance: false);
                }

                p.DataSn = dataSn++;
                p.BufferOffset = (uint)offset;
                QueuePdu(pdu, task.Buffer.Pointer + offset, n, copy: false);
            }

            if (good)
            {
                // Its buffer is in the output until the output is sent. Only now: a flush while its PDUs were
                // being queued must not free the task before its last PDU is out.
                _sent.Add(s);
                return;
            }
        }

        QueueResponse(itt, task.Status, underflow, overflow, residual, task.Sense);
        _sent.Add(s);
    }

    /// <summary>Answers a command refused before it got a task: a status, and sense for CHECK CONDITION.</summary>
    private void QueueStatus(uint itt, byte status, byte key = 0, byte asc = 0)
    {
        Span<byte> sense = stackalloc byte[18];
        ScsiTask.WriteSense(sense, key, asc, 0);
        QueueResponse(itt, status, false, false, 0, status == ScsiStatus.CheckCondition ? sense : default);
    }

    private void QueueResponse(uint itt, byte status, bool underflow, bool overflow, uint residual, ReadOnlySpan<byte> sense)
    {
        Span<byte> reply = stackalloc byte[IscsiHeader.Length];
        var r = ScsiResponsePdu.Create(reply);
        r.InitiatorTaskTag = itt;
        r.ResidualUnderflow = underflow;
        r.ResidualOverflow = overflow;
        r.Status = status;
        Stamp(reply);
        r.ResidualCount = residual;
        if (sense.IsEmpty)
        {
            QueuePdu(reply, null, 0, copy: true);
            return;
        }

        // Sense data: its length (2 bytes), then the sense (RFC 7143, 11.4.7).
        Span<byte> segment = stackalloc byte[2 + sense.Length];
        BinaryPrimitives.WriteUInt16BigEndian(segment, (ushort)sense.Length);
        sense.CopyTo(segment[2..]);
        fixed (byte* d = segment)
        {
            QueuePdu(reply, d, segment.Length, copy: true);
        }
    }
}
