using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;

namespace Hci.Testing;

/// <summary>
/// An iSCSI session at its barest, asynchronous, for tests that throw many connections or mangled PDUs at the target
/// and only need to know whether a well-formed login and command are still served: one-PDU logins, commands on
/// LUN 1 answered by their status, and whole PDUs read with a 10 s deadline (null when the target hangs up).
/// </summary>
internal static class IscsiProbe
{
    /// <summary>A login request PDU (immediate, CSG 0) with <paramref name="text"/> as its keys.</summary>
    /// <param name="isid">The low byte of the ISID: the initiator port.</param>
    /// <param name="transit">Ask to go straight to the full feature phase.</param>
    /// <param name="text">The keys, each ending in NUL.</param>
    /// <param name="cmdSn">The CmdSN.</param>
    /// <returns>The PDU.</returns>
    public static byte[] LoginPdu(byte isid, bool transit, string text, uint cmdSn = 1)
    {
        byte[] body = Encoding.ASCII.GetBytes(text);
        var pdu = new byte[48 + ((body.Length + 3) & ~3)];
        pdu[0] = 0x43;
        pdu[1] = transit ? (byte)0x87 : (byte)0x00;
        pdu[5] = (byte)(body.Length >> 16);
        pdu[6] = (byte)(body.Length >> 8);
        pdu[7] = (byte)body.Length;
        pdu[8] = 0x80;
        pdu[13] = isid;
        BinaryPrimitives.WriteUInt32BigEndian(pdu.AsSpan(24), cmdSn);
        body.CopyTo(pdu, 48);
        return pdu;
    }

    /// <summary>Logs in to a normal session in one step; true if the target moved it to the full feature phase.</summary>
    /// <param name="s">A connected socket.</param>
    /// <param name="initiator">The initiator's name.</param>
    /// <param name="target">The target's name.</param>
    /// <param name="isid">The low byte of the ISID.</param>
    /// <param name="cmdSn">The CmdSN.</param>
    /// <returns>Whether the login succeeded.</returns>
    public static async Task<bool> Login(Socket s, string initiator, string target, byte isid, uint cmdSn = 1)
    {
        await s.SendAsync(LoginPdu(isid, transit: true, $"InitiatorName={initiator}\0TargetName={target}\0SessionType=Normal\0MaxRecvDataSegmentLength=65536\0", cmdSn));
        var (header, _) = await ReadPdu(s);
        return header != null && header[0] == 0x23 && header[36] == 0 && (header[1] & 0x80) != 0;
    }

    /// <summary>A SCSI command on LUN 1 whose task tag is its CmdSN; returns its status, or -1 if the target hung up.</summary>
    /// <param name="s">A socket in the full feature phase.</param>
    /// <param name="cmdSn">The CmdSN (and task tag).</param>
    /// <param name="cdb">The CDB.</param>
    /// <param name="readLength">Bytes expected in.</param>
    /// <returns>The SCSI status, or -1.</returns>
    public static async Task<int> Command(Socket s, uint cmdSn, byte[] cdb, int readLength)
    {
        var pdu = new byte[48];
        pdu[0] = 0x01;
        pdu[1] = (byte)(0x80 | (readLength > 0 ? 0x40 : 0));
        BinaryPrimitives.WriteUInt64BigEndian(pdu.AsSpan(8), 1UL << 48);
        BinaryPrimitives.WriteUInt32BigEndian(pdu.AsSpan(16), cmdSn);
        BinaryPrimitives.WriteUInt32BigEndian(pdu.AsSpan(20), (uint)readLength);
        BinaryPrimitives.WriteUInt32BigEndian(pdu.AsSpan(24), cmdSn);
        cdb.CopyTo(pdu, 32);
        await s.SendAsync(pdu);
        while (true)
        {
            var (header, _) = await ReadPdu(s);
            if (header == null)
            {
                return -1;
            }

            if (header[0] == 0x21 || (header[0] == 0x25 && (header[1] & 0x01) != 0))
            {
                return header[3];
            }
        }
    }

    /// <summary>The next whole PDU (its data padded), or a null header if the target hung up or said nothing for 10 s.</summary>
    /// <param name="s">The socket.</param>
    /// <returns>The header and data.</returns>
    public static async Task<(byte[]? Header, byte[] Data)> ReadPdu(Socket s)
    {
        var header = new byte[48];
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        try
        {
            for (int have = 0; have < 48;)
            {
                int n = await s.ReceiveAsync(header.AsMemory(have), SocketFlags.None, timeout.Token);
                if (n == 0)
                {
                    return (null, []);
                }

                have += n;
            }

            int length = ((header[5] << 16) | (header[6] << 8) | header[7]) + 3 & ~3;
            var data = new byte[length];
            for (int have = 0; have < length;)
            {
                int n = await s.ReceiveAsync(data.AsMemory(have), SocketFlags.None, timeout.Token);
                if (n == 0)
                {
                    return (null, []);
                }

                have += n;
            }

            return (header, data);
        }
        catch (SocketException)
        {
            return (null, []);
        }
    }
}
