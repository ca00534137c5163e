using System.Buffers.Binary;
using System.Net.Sockets;
using Hci.Core.Devices;
using Hci.Transport.Iscsi;
using Hci.Transport.Scsi;

namespace Hci.Transport.Tests;

/// <summary>Tests that count the process's threads: they run alone, so that other tests' threads do not count.</summary>
[CollectionDefinition(nameof(ThreadCountCollection), DisableParallelization = true)]
public sealed class ThreadCountCollection;

/// <summary>
/// Sessions share the target's reactors: a target with default options (as <c>hci-vmtype</c> starts one) serves 256
/// logged-in sessions, each with verified I/O, on a number of threads that does not grow with the sessions.
/// </summary>
[Collection(nameof(ThreadCountCollection))]
public sealed class IscsiManySessionsTests
{
    private const string Iqn = "iqn.2026-11.org.hci.test:datapath"; // the name IscsiDataPathTests.Connect logs in to
    private const int Sessions = 256;
    private const int Block = 4096;

    // Threads a session may add at most, all sessions together: the thread pool may grow by a few while logins run.
    private const int ThreadSlack = 8;

    [Fact]
    public async Task ATargetWithDefaultOptionsServes256LoggedInSessionsOnAFixedNumberOfThreads()
    {
        using var device = new MemoryBlockDevice(64 << 20);
        await using var target = new IscsiTarget(new IscsiTargetOptions { Portal = "127.0.0.1:0", TargetName = Iqn }, new Dictionary<int, ScsiDisk> { [1] = new ScsiDisk(device, "many") });
        target.Start();
        int port = target.LocalEndPoint.Port;
        var open = new List<(Socket Socket, RawInitiator Client)>();
        try
        {
            int afterOne = 0;
            int afterAll = 0;
            await Task.Run(() =>
            {
                for (int i = 0; i < Sessions; i++)
                {
                    var socket = RawInitiator.Connect(port, digests: false);
                    var client = new RawInitiator(socket, digests: false);
                    open.Add((socket, client));
                    WriteAndReadBack(client, (uint)i);
                    if (i == 0)
                    {
                        afterOne = Threads();
                    }
                }

                // Every session still logged in, and still served.
                for (int i = 0; i < Sessions; i++)
                {
                    WriteAndReadBack(open[i].Client, (uint)(Sessions + i));
                }

                afterAll = Threads();
            });

            Assert.Equal(Sessions, target.ConnectionCount);
            Assert.True(afterAll <= afterOne + ThreadSlack, $"{afterOne} threads with one session, {afterAll} with {Sessions}");
            foreach (var (_, client) in open)
            {
                client.Logout();
            }
        }
        finally
        {
            foreach (var (socket, _) in open)
            {
                socket.Dispose();
            }
        }
    }

    private static void WriteAndReadBack(RawInitiator client, uint lba)
    {
        var payload = new byte[Block];
        Random.Shared.NextBytes(payload);
        BinaryPrimitives.WriteUInt32BigEndian(payload, lba);
        client.Send(RawInitiator.Rw(true, lba), payload, 0);
        Assert.Equal(ScsiStatus.Good, client.Receive().Status);
        client.Send(RawInitiator.Rw(false, lba), null, Block);
        var (status, data) = client.Receive();
        Assert.Equal(ScsiStatus.Good, status);
        Assert.Equal(payload, data);
    }

    // The process's threads, as the kernel counts them.
    private static int Threads()
    {
        foreach (string line in File.ReadLines("/proc/self/status"))
        {
            if (line.StartsWith("Threads:", StringComparison.Ordinal))
            {
                return int.Parse(line.AsSpan(8).Trim(), System.Globalization.CultureInfo.InvariantCulture);
            }
        }

        throw new InvalidOperationException("no Threads line in /proc/self/status");
    }
}
