using System.Diagnostics.Metrics;
using Hci.Core.Blocks;
using Hci.Core.Buffers;
using Hci.Core.Devices;
using Hci.Core.Reactors;
using Hci.Transport.Vhost;

namespace Hci.Transport.Tests;

/// <summary>The back-end's data plane allocates nothing per request once warm, read from the reactors' allocation meter.</summary>
public sealed class VhostAllocationTests
{
    [Fact]
    public async Task ServingReadsAndWritesAllocatesNothingOnTheReactorOnceWarm()
    {
        string dir = Directory.CreateTempSubdirectory("hci-vhost-alloc-").FullName;
        try
        {
            string socket = Path.Combine(dir, "s.sock");
            using var device = new MemoryBlockDevice(16 << 20);
            using var server = new VhostUserBlkServer(device, new VhostUserBlkServerOptions { SocketPath = socket, MaxQueues = 1, ReactorThreads = 1 });
            server.Start();
            await using var client = VhostUserBlkClient.Connect(new VhostUserBlkClientOptions { SocketPath = socket, QueueSize = 64 });
            using var buffer = new AlignedBuffer(4096);

            async Task Run(int count)
            {
                for (int i = 0; i < count; i++)
                {
                    long offset = (i % 1024) * 4096L;
                    await client.WriteAsync(offset, buffer.Memory);
                    await client.ReadAsync(offset, buffer.Memory);
                }
            }

            await Run(500);
            string reactor = Assert.Single(server.ReactorNames);
            long before = ReactorAllocatedBytes(reactor);
            await Run(2000);
            long after = ReactorAllocatedBytes(reactor);
            Assert.Equal(0, after - before);
            Assert.True(server.Requests >= 5000, $"only {server.Requests} requests were served");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    // hci.reactor.allocated_bytes of one reactor, as any metrics listener sees it.
    private static long ReactorAllocatedBytes(string reactor)
    {
        ReactorMetrics.EnsureCreated();
        long value = -1;
        using var listener = new MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == ReactorMetrics.MeterName && instrument.Name == "hci.reactor.allocated_bytes")
                {
                    l.EnableMeasurementEvents(instrument);
                }
            },
        };
        listener.SetMeasurementEventCallback<long>((_, measurement, tags, _) =>
        {
            foreach (var tag in tags)
            {
                if (tag.Key == "reactor" && (string?)tag.Value == reactor)
                {
                    value = measurement;
                }
            }
        });
        listener.Start();
        listener.RecordObservableInstruments();
        Assert.True(value >= 0, $"the meter has no reactor named {reactor}");
        return value;
    }
}
