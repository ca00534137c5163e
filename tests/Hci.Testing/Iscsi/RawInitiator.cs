using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;
using Hci.Transport.Iscsi;
using Xunit;

namespace Hci.Testing;

/// <summary>
/// An iSCSI initiator written PDU by PDU, for tests that drive the target as no stock initiator would: commands at
/// depth with their own task tags and CmdSNs, Data-Out and R2T by hand, task management, digests (and a corrupt one
/// on request), Text requests and NOP-Out answers. It reads and writes on a connected, logged-in socket
/// (<see cref="Connect"/>); it blocks, so tests run it under <c>Task.Run</c>.
/// </summary>
/// <param name="socket">A socket in the full feature phase.</param>
/// <param name="digests">Whether header and data digests (CRC32C) were negotiated.</param>
internal sealed class RawInitiator(Socket socket, bool digests)
{
    /// <summary>The target name the tests' targets are given unless a test names another.</summary>
    public const string DefaultTarget = "iqn.2026-11.org.hci.test:datapath";

    private uint _cmdSn = 1;
    private uint _itt = 100;

    /// <summary>Unsolicited data the login allows with a command (FirstBurstLength asked for by <see cref="Connect"/>).</summary>
    public int FirstBurstLength { get; init; } = 65536;

    /// <summary>The largest data segment the target takes in one PDU (the MaxRecvDataSegmentLength it declared).</summary>
    public int TargetMaxRecvDataSegmentLength { get; init; } = 8192;

    /// <summary>Sends the next PDU's header digest wrong by one bit, to provoke the target's digest check.</summary>
    public bool CorruptNextHeaderDigest { get; set; }

    public static void ReadExactly(Socket s, Span<byte> into)
    {
        while (into.Length > 0)
        {
            int n = s.Receive(into);
            if (n == 0)
            {
                throw new EndOfStreamException();
            }

            into = into[n..];
        }
    }

    /// <summary>One answer to a command: its task tag, status, Data-In and the sense data of a CHECK CONDITION.</summary>
    public readonly record struct Answer(uint Itt, byte Status, byte[] Data, byte[] Sense)
    {
        public int SenseKey => Sense.Length > 2 ? Sense[2] & 0x0F : -1;

        public int Asc => Sense.Length > 12 ? Sense[12] : -1;
    }

    public uint Send(byte[] cdb, byte[]? immediate, int readLength, int lun = 1, uint? cmdSn = null)
        => SendCommand(cdb, immediate, immediate?.Length ?? readLength, write: immediate != null, lun, cmdSn: cmdSn);

    /// <summary>A SCSI command with its expected length and direction given apart from any immediate data.</summary>
    public uint SendCommand(byte[] cdb, byte[]? immediate, int expectedLength, bool write, int lun = 1, bool final = true, bool immediateDelivery = false, uint? cmdSn = null)
    {
        var h = new byte[48];
        h[0] = (byte)(0x01 | (immediateDelivery ? 0x40 : 0));
        h[1] = (byte)((final ? 0x80 : 0) | (write ? 0x20 : 0) | (!write && expectedLength > 0 ? 0x40 : 0) | 0x01);
        BinaryPrimitives.WriteUInt64BigEndian(h.AsSpan(8), (ulong)lun << 48);
        uint itt = _itt++;
        BinaryPrimitives.WriteUInt32BigEndian(h.AsSpan(16), itt);
        BinaryPrimitives.WriteUInt32BigEndian(h.AsSpan(20), (uint)expectedLength);
        BinaryPrimitives.WriteUInt32BigEndian(h.AsSpan(24), cmdSn ?? (immediateDelivery ? _cmdSn : _cmdSn++));
        cdb.CopyTo(h, 32);
        Write(h, immediate ?? []);
        return itt;
    }

    /// <summary>A Data-Out PDU for a write in progress.</summary>
    public void SendDataOut(uint itt, uint ttt, uint dataSn, uint offset, byte[] data, bool final, int lun = 1)
    {
        var h = new byte[48];
        h[0] = 0x05;
        h[1] = (byte)(final ? 0x80 : 0);
        BinaryPrimitives.WriteUInt64BigEndian(h.AsSpan(8), (ulong)lun << 48);
        BinaryPrimitives.WriteUInt32BigEndian(h.AsSpan(16), itt);
        BinaryPrimitives.WriteUInt32BigEndian(h.AsSpan(20), ttt);
        BinaryPrimitives.WriteUInt32BigEndian(h.AsSpan(36), dataSn);
        BinaryPrimitives.WriteUInt32BigEndian(h.AsSpan(40), offset);
        Write(h, data);
    }

    /// <summary>A task management function request (immediate); returns its task tag.</summary>
    public uint SendTaskManagement(int function, uint referencedTag = 0xFFFFFFFF, int lun = 1)
    {
        var h = new byte[48];
        h[0] = 0x40 | 0x02;
        h[1] = (byte)(0x80 | function);
        BinaryPrimitives.WriteUInt64BigEndian(h.AsSpan(8), (ulong)lun << 48);
        uint itt = _itt++;
        BinaryPrimitives.WriteUInt32BigEndian(h.AsSpan(16), itt);
        BinaryPrimitives.WriteUInt32BigEndian(h.AsSpan(20), referencedTag);
        BinaryPrimitives.WriteUInt32BigEndian(h.AsSpan(24), _cmdSn);
        Write(h, []);
        return itt;
    }

    /// <summary>The next command answer, whichever task it belongs to; NOP-Ins are answered on the way.</summary>
    public Answer ReceiveAnswer()
    {
        var data = new List<byte>();
        while (true)
        {
            var (h, segment) = Next();
            uint itt = BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(16));
            int op = h[0] & 0x3F;
            if (op == 0x25)
            {
                data.AddRange(segment);
                if ((h[1] & 0x01) != 0)
                {
                    return new Answer(itt, h[3], data.ToArray(), []);
                }
            }
            else if (op == 0x21)
            {
                byte[] sense = segment.Length >= 2 ? segment[2..] : [];
                return new Answer(itt, h[3], data.ToArray(), sense);
            }
            else if (op == 0x20 && BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(20)) != 0xFFFFFFFF)
            {
                AnswerPing(h);
            }
            else
            {
                throw new InvalidOperationException($"expected a command's answer, got opcode 0x{op:x2} for task {itt:x}");
            }
        }
    }

    /// <summary>The next CmdSN this initiator would use; <see cref="Skip"/> moves past numbers a test sends itself.</summary>
    public uint CmdSn => _cmdSn;

    public void Skip(uint count) => _cmdSn += count;

    /// <summary>A Text request in the full feature phase; returns the response's text.</summary>
    public string Text(string keys)
    {
        var h = new byte[48];
        h[0] = 0x04;
        h[1] = 0x80;
        BinaryPrimitives.WriteUInt32BigEndian(h.AsSpan(16), _itt++);
        BinaryPrimitives.WriteUInt32BigEndian(h.AsSpan(20), 0xFFFFFFFF);
        BinaryPrimitives.WriteUInt32BigEndian(h.AsSpan(24), _cmdSn++);
        Write(h, Encoding.ASCII.GetBytes(keys));
        while (true)
        {
            var (header, data) = Next();
            if (header[0] == 0x24)
            {
                return Encoding.ASCII.GetString(data);
            }
        }
    }

    public void Logout()
    {
        var h = new byte[48];
        h[0] = 0x46;
        h[1] = 0x80;
        BinaryPrimitives.WriteUInt32BigEndian(h.AsSpan(16), _itt++);
        BinaryPrimitives.WriteUInt32BigEndian(h.AsSpan(24), _cmdSn++);
        Write(h, []);
        while (Next().Header[0] != 0x26)
        {
        }
    }

    public (byte Status, byte[] Data) Receive()
    {
        var a = ReceiveAnswer();
        return (a.Status, a.Data);
    }

    private void Write(byte[] header, byte[] data)
    {
        header[5] = (byte)(data.Length >> 16);
        header[6] = (byte)(data.Length >> 8);
        header[7] = (byte)data.Length;
        var pdu = new List<byte>(header);
        if (digests)
        {
            var d = new byte[4];
            IscsiDigest.Write(IscsiDigest.Compute(header) ^ (CorruptNextHeaderDigest ? 1u : 0u), d);
            pdu.AddRange(d);
        }

        if (data.Length > 0)
        {
            var padded = new byte[(data.Length + 3) & ~3];
            data.CopyTo(padded, 0);
            pdu.AddRange(padded);
            if (digests)
            {
                var d = new byte[4];
                IscsiDigest.Write(IscsiDigest.Compute(padded), d);
                pdu.AddRange(d);
            }
        }

        socket.Send(pdu.ToArray());
    }

    public void AnswerPing(byte[] nopIn)
    {
        var h = new byte[48];
        h[0] = 0x40 | 0x00; // NOP-Out, immediate
        h[1] = 0x80;
        BinaryPrimitives.WriteUInt32BigEndian(h.AsSpan(16), 0xFFFFFFFF);
        nopIn.AsSpan(20, 4).CopyTo(h.AsSpan(20)); // the target's tag
        BinaryPrimitives.WriteUInt32BigEndian(h.AsSpan(24), _cmdSn);
        Write(h, []);
    }

    public (byte[] Header, byte[] Data) Next()
    {
        var h = new byte[48];
        ReadExactly(socket, h);
        var d = new byte[4];
        if (digests)
        {
            ReadExactly(socket, d);
            Assert.True(IscsiDigest.Verify(h, d), "a bad header digest from the target");
        }

        int length = (h[5] << 16) | (h[6] << 8) | h[7];
        var data = new byte[(length + 3) & ~3];
        ReadExactly(socket, data);
        if (digests && length > 0)
        {
            ReadExactly(socket, d);
            Assert.True(IscsiDigest.Verify(data, d), "a bad data digest from the target");
        }

        return (h, data[..length]);
    }

    /// <summary>
    /// One command carried to its end as an initiator's SCSI layer would: a write's data goes as immediate data up to
    /// <see cref="FirstBurstLength"/> and the rest as Data-Out PDUs, no larger than the target takes, for each R2T;
    /// a read's Data-In is gathered; NOP-Ins are answered on the way.
    /// </summary>
    /// <param name="cdb">The command descriptor block.</param>
    /// <param name="write">The data to write, or null for a command that reads or moves no data.</param>
    /// <param name="readLength">The bytes expected in, for a read.</param>
    /// <returns>The answer.</returns>
    public Answer Execute(byte[] cdb, byte[]? write, int readLength = 0)
    {
        if (write == null)
        {
            Send(cdb, null, readLength);
            return ReceiveAnswer();
        }

        int immediate = Math.Min(write.Length, Math.Min(FirstBurstLength, TargetMaxRecvDataSegmentLength));
        uint itt = SendCommand(cdb, write[..immediate], write.Length, write: true);
        var data = new List<byte>();
        while (true)
        {
            var (h, segment) = Next();
            int op = h[0] & 0x3F;
            switch (op)
            {
                case 0x31: // R2T: send exactly the range it asks for
                    Assert.Equal(itt, BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(16)));
                    uint ttt = BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(20));
                    int offset = checked((int)BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(40)));
                    int length = checked((int)BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(44)));
                    Assert.True(offset >= 0 && length > 0 && offset <= write.Length - length, $"an R2T for {length} bytes at {offset} of a {write.Length}-byte write");
                    uint dataSn = 0;
                    for (int at = 0; at < length; at += TargetMaxRecvDataSegmentLength)
                    {
                        int n = Math.Min(TargetMaxRecvDataSegmentLength, length - at);
                        SendDataOut(itt, ttt, dataSn++, (uint)(offset + at), write[(offset + at)..(offset + at + n)], final: at + n == length);
                    }

                    break;
                case 0x21:
                    return new Answer(BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(16)), h[3], data.ToArray(), segment.Length >= 2 ? segment[2..] : []);
                case 0x20 when BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(20)) != 0xFFFFFFFF:
                    AnswerPing(h);
                    break;
                default:
                    throw new InvalidOperationException($"expected an R2T or the answer to a write, got opcode 0x{op:x2}");
            }
        }
    }

    /// <summary>A READ(16) or WRITE(16) of one block at <paramref name="lba"/>.</summary>
    public static byte[] Rw(bool write, uint lba)
    {
        var cdb = new byte[16];
        cdb[0] = write ? (byte)0x2A : (byte)0x28;
        BinaryPrimitives.WriteUInt32BigEndian(cdb.AsSpan(2), lba);
        cdb[8] = 1;
        return cdb;
    }

    private static int _nextIsid;

    /// <summary>
    /// Connects and logs in to a normal session through the security and operational stages. Each connection is a
    /// session of its own initiator port (its own ISID) unless the test names the ISID.
    /// </summary>
    public static Socket Connect(int port, bool digests, string host = "127.0.0.1", int maxRecv = 65536, string extraKeys = "", int isid = -1, string target = DefaultTarget)
        => ConnectAndNegotiate(port, digests, host, maxRecv, extraKeys, isid, target).Socket;

    /// <summary>As <see cref="Connect"/>, and the text of the operational stage's answer (the target's declared limits).</summary>
    public static (Socket Socket, string Answer) ConnectAndNegotiate(int port, bool digests, string host = "127.0.0.1", int maxRecv = 65536, string extraKeys = "", int isid = -1, string target = DefaultTarget)
    {
        isid = isid >= 0 ? isid : 0x10000 + Interlocked.Increment(ref _nextIsid);
        var address = System.Net.IPAddress.Parse(host);
        var s = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true, ReceiveTimeout = 10_000 };
        try
        {
            s.Connect(address, port);
            string digest = digests ? "CRC32C" : "None";
            Login(s, 0x81, $"InitiatorName=iqn.2026-11.org.hci.test:raw\0TargetName={target}\0SessionType=Normal\0AuthMethod=None\0", isid);
            string answer = Login(s, 0x87, $"HeaderDigest={digest}\0DataDigest={digest}\0MaxRecvDataSegmentLength={maxRecv}\0ImmediateData=Yes\0InitialR2T=No\0FirstBurstLength=65536\0{extraKeys}", isid);
            Assert.Contains($"HeaderDigest={digest}", answer);
            return (s, answer);
        }
        catch
        {
            s.Dispose();
            throw;
        }
    }

    /// <summary>One login request and its answer's text; asserts the stage transition was accepted.</summary>
    public static string Login(Socket s, byte stages, string keys, int isid)
    {
        var text = Encoding.ASCII.GetBytes(keys);
        var pdu = new byte[48 + ((text.Length + 3) & ~3)];
        pdu[0] = 0x43;
        pdu[1] = stages;
        pdu[7] = (byte)text.Length;
        pdu[6] = (byte)(text.Length >> 8);
        pdu[8] = 0x80;
        BinaryPrimitives.WriteInt32BigEndian(pdu.AsSpan(10), isid);
        pdu[27] = 1; // CmdSN: the first command's, as the login is immediate
        text.CopyTo(pdu, 48);
        s.Send(pdu);
        var header = new byte[48];
        ReadExactly(s, header);
        var reply = new byte[((header[5] << 16) | (header[6] << 8) | header[7]) + 3 & ~3];
        ReadExactly(s, reply);
        Assert.Equal(0x23, header[0]);
        Assert.Equal(0, header[36]);
        Assert.Equal(stages & 0x83, header[1] & 0x83);
        return Encoding.ASCII.GetString(reply);
    }
}
