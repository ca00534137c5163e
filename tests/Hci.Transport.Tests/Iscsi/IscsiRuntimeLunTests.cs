using System.Buffers.Binary;
using Hci.Core.Devices;
using Hci.Transport.Iscsi;
using Hci.Transport.Scsi;
using static Hci.Testing.RawInitiator;

namespace Hci.Transport.Tests;

/// <summary>LUNs added to and removed from a running iSCSI target, seen through the raw initiator by a session that
/// was logged in before the change.</summary>
public sealed class IscsiRuntimeLunTests
{
    private const int Block = 4096;

    private static byte[] ReportLunsCdb()
    {
        var cdb = new byte[12];
        cdb[0] = 0xA0;
        BinaryPrimitives.WriteUInt32BigEndian(cdb.AsSpan(6), 4096);
        return cdb;
    }

    private static List<int> ReportedLuns(RawInitiator client, int lun)
    {
        client.Send(ReportLunsCdb(), null, 4096, lun);
        var answer = client.ReceiveAnswer();
        Assert.Equal(ScsiStatus.Good, answer.Status);
        int length = (int)BinaryPrimitives.ReadUInt32BigEndian(answer.Data);
        var luns = new List<int>();
        for (int at = 8; at < 8 + length; at += 8)
        {
            luns.Add(ScsiLunMap.Decode(BinaryPrimitives.ReadUInt64BigEndian(answer.Data.AsSpan(at))));
        }

        return luns;
    }

    [Fact]
    public async Task ALunAddedWhileASessionRunsIsReportedAndServedAndARemovedOneAnswersLogicalUnitNotSupported()
    {
        using var first = new MemoryBlockDevice(16 << 20);
        using var second = new MemoryBlockDevice(16 << 20);
        await using var target = new IscsiTarget(new IscsiTargetOptions { Portal = "127.0.0.1:0", TargetName = DefaultTarget }, new Dictionary<int, ScsiDisk>());
        target.Start();
        int port = target.LocalEndPoint.Port;
        await Task.Run(() =>
        {
            using var s = Connect(port, digests: false);
            var client = new RawInitiator(s, digests: false);
            Assert.Empty(ReportedLuns(client, 0));

            Assert.True(target.AddLun(1, new ScsiDisk(first, "first")));
            Assert.False(target.AddLun(1, new ScsiDisk(second, "taken")));
            Assert.True(target.AddLun(2, new ScsiDisk(second, "second")));
            Assert.Equal([1, 2], ReportedLuns(client, 0));

            // The first command to a unit after the change reports it once, as a unit attention.
            var payload = new byte[Block];
            payload.AsSpan().Fill(0x5A);
            client.Send(Rw(true, 3), payload, 0, lun: 2);
            var a = client.ReceiveAnswer();
            Assert.Equal(ScsiStatus.CheckCondition, a.Status);
            Assert.Equal(0x06, a.SenseKey); // UNIT ATTENTION
            Assert.Equal(0x3F, a.Asc); // REPORTED LUNS DATA HAS CHANGED (ASCQ 0Eh)
            Assert.Equal(0x0E, a.Sense[13]);

            client.Send(Rw(true, 3), payload, 0, lun: 2);
            Assert.Equal(ScsiStatus.Good, client.ReceiveAnswer().Status);
            client.Send(Rw(false, 3), null, Block, lun: 2);
            a = client.ReceiveAnswer();
            Assert.Equal(ScsiStatus.Good, a.Status);
            Assert.Equal(payload, a.Data);

            Assert.NotNull(target.RemoveLun(2));
            Assert.Null(target.RemoveLun(2));
            client.Send(Rw(false, 3), null, Block, lun: 2);
            a = client.ReceiveAnswer();
            Assert.Equal(ScsiStatus.CheckCondition, a.Status);
            Assert.Equal(0x05, a.SenseKey); // ILLEGAL REQUEST
            Assert.Equal(0x25, a.Asc); // LOGICAL UNIT NOT SUPPORTED
            Assert.Equal([1], ReportedLuns(client, 1));

            client.Send(Rw(false, 3), null, Block, lun: 1);
            a = client.ReceiveAnswer();
            Assert.Equal(0x06, a.SenseKey); // the removal, reported once
            client.Send(Rw(false, 3), null, Block, lun: 1);
            Assert.Equal(ScsiStatus.Good, client.ReceiveAnswer().Status);
        });
    }
}
