using System.Buffers.Binary;
using Hci.Transport.Iscsi;

namespace Hci.Transport.Tests;

/// <summary>The typed PDU views read and write the fields where RFC 7143 puts them.</summary>
public sealed class IscsiPduViewTests
{
    [Fact]
    public void AScsiCommandsNamedFieldsAreTheBytesRfc7143Names()
    {
        var bytes = new byte[IscsiHeader.Length];
        bytes[0] = 0x41; // immediate SCSI Command
        bytes[1] = 0x80 | 0x40 | 0x01; // F, R, ATTR simple
        BinaryPrimitives.WriteUInt64BigEndian(bytes.AsSpan(8), 3UL << 48);
        BinaryPrimitives.WriteUInt32BigEndian(bytes.AsSpan(16), 0x11223344);
        BinaryPrimitives.WriteUInt32BigEndian(bytes.AsSpan(20), 4096);
        BinaryPrimitives.WriteUInt32BigEndian(bytes.AsSpan(24), 77);
        BinaryPrimitives.WriteUInt32BigEndian(bytes.AsSpan(28), 5);
        bytes[32] = 0x28;
        var c = new ScsiCommandPdu(bytes);
        Assert.True(c.Header.Immediate);
        Assert.True(c.Final);
        Assert.True(c.Read);
        Assert.False(c.Write);
        Assert.Equal(1, c.TaskAttributes);
        Assert.Equal(3UL << 48, c.Lun);
        Assert.Equal(0x11223344u, c.InitiatorTaskTag);
        Assert.Equal(4096u, c.ExpectedDataTransferLength);
        Assert.Equal(77u, c.CmdSn);
        Assert.Equal(5u, c.ExpStatSn);
        Assert.Equal(0x28, c.Cdb[0]);
        Assert.Equal(16, c.Cdb.Length);
    }

    [Fact]
    public void ADataInWithStatusSetsItsFlagsAndCountersInPlace()
    {
        var bytes = new byte[IscsiHeader.Length];
        bytes.AsSpan().Fill(0xEE); // Create clears what was there
        var d = DataInPdu.Create(bytes);
        d.Final = true;
        d.HasStatus = true;
        d.ResidualUnderflow = true;
        d.Status = 0x02;
        d.StatSn = 9;
        d.ExpCmdSn = 10;
        d.MaxCmdSn = 11;
        d.DataSn = 12;
        d.BufferOffset = 13;
        d.ResidualCount = 14;
        Assert.Equal(0x25, bytes[0]);
        Assert.Equal(0x80 | 0x02 | 0x01, bytes[1]);
        Assert.Equal(0x02, bytes[3]);
        Assert.Equal(0, bytes[4]);
        foreach (var (offset, value) in new[] { (24, 9u), (28, 10u), (32, 11u), (36, 12u), (40, 13u), (44, 14u) })
        {
            Assert.Equal(value, BinaryPrimitives.ReadUInt32BigEndian(bytes.AsSpan(offset)));
        }
    }

    [Fact]
    public void LoginStagesTaskManagementFunctionsAndRejectReasonsAreNamed()
    {
        var bytes = new byte[IscsiHeader.Length];
        bytes[1] = 0x80 | (1 << 2) | 3; // T, CSG operational, NSG full feature
        var login = new LoginRequestPdu(bytes);
        Assert.True(login.Transit);
        Assert.False(login.Continue);
        Assert.Equal(1, login.CurrentStage);
        Assert.Equal(3, login.NextStage);

        bytes[1] = 0x80 | 5;
        Assert.Equal(IscsiTaskManagementFunction.LogicalUnitReset, new TaskManagementRequestPdu(bytes).Function);

        var reject = RejectPdu.Create(bytes);
        reject.Reason = IscsiRejectReason.InvalidPduField;
        Assert.Equal(0x3F, bytes[0]);
        Assert.Equal(0x80, bytes[1]);
        Assert.Equal(0x09, bytes[2]);

        var response = LoginResponsePdu.Create(bytes);
        response.Transit = true;
        response.CurrentStage = 1;
        response.NextStage = 3;
        response.Tsih = 0x1234;
        response.StatusClass = 2;
        response.StatusDetail = 7;
        Assert.Equal(0x80 | 0x04 | 0x03, bytes[1]);
        Assert.Equal(0x1234, BinaryPrimitives.ReadUInt16BigEndian(bytes.AsSpan(14)));
        Assert.Equal(2, bytes[36]);
        Assert.Equal(7, bytes[37]);
    }

    [Fact]
    public void AViewOverFewerThan48BytesIsRefused()
    {
        Assert.Throws<ArgumentException>(() => new ScsiCommandPdu(new byte[47]));
    }
}
