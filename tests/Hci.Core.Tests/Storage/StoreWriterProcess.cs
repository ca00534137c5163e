using Hci.Core.Blocks;
using Hci.Core.Buffers;
using Hci.Core.Devices;
using Hci.Core.Replication;
using Hci.Core.Storage;

namespace Hci.Core.Tests.Storage;

/// <summary>
/// A mode of the test assembly's entry point (Program.cs): <c>dotnet Hci.Core.Tests.dll store-writer FILE</c> writes to the replica store on
/// FILE through io_uring with FUA writes, eight in flight, and prints every write as it is submitted
/// (<c>sub ID EXTENT OFFSET BLOCKS</c>) and acknowledged (<c>ack ID</c>), until it is killed (or after a minute).
/// Write <c>i</c> of a slot always goes to extent <c>slot</c>, so writes in flight together never overlap.
/// </summary>
internal static unsafe class StoreWriterProcess
{
    public const ulong Volume = 77;
    public const int Depth = 8;

    /// <summary>Runs the writer; called from the assembly's entry point (Program.Main) for <c>store-writer FILE</c>.</summary>
    public static int RunMode(string file) => Run(file);

    private static int Run(string path)
    {
        using var device = BlockDevices.Open(new BlockDeviceOptions { Engine = BlockEngine.IoUring, Path = path });
        using var store = ReplicaStore.OpenAsync(device).GetAwaiter().GetResult();
        using var queue = store.CreateQueue();
        var rng = new Random(Environment.ProcessId);
        var handler = new Acks();
        var requests = new ReplicaRequest[Depth];
        var buffers = new AlignedBuffer[Depth];
        long nextId = 1;
        var stop = DateTime.UtcNow.AddMinutes(1);
        for (int i = 0; i < Depth; i++)
        {
            requests[i] = new ReplicaRequest(1) { Handler = handler, UserTag = i };
            buffers[i] = new AlignedBuffer(8 * StoreHarness.Block);
            Submit(i);
        }

        while (DateTime.UtcNow < stop)
        {
            queue.Poll();
            while (handler.Ready.TryDequeue(out int slot))
            {
                Submit(slot);
            }
        }

        return 0;

        void Submit(int slot)
        {
            var r = requests[slot];
            long id = nextId++;
            int blocks = rng.Next(1, 9);
            long offset = (long)rng.Next(0, 64 - blocks + 1) * StoreHarness.Block;
            r.Reset();
            r.Operation = ReplicaOperation.Write;
            r.VolumeId = Volume;
            r.Extent = slot;
            r.Offset = offset;
            r.Epoch = 1;
            r.Flags = BlockRequestFlags.ForceUnitAccess;
            r.UserState = id;
            Pattern.Fill(buffers[slot].Span[..(blocks * StoreHarness.Block)], Volume, slot, offset, id);
            r.AddSegment(buffers[slot].Pointer, blocks * StoreHarness.Block);
            Console.Out.WriteLine($"sub {id} {slot} {offset} {blocks}");
            queue.Submit(r);
        }
    }

    private sealed class Acks : IReplicaCompletionHandler
    {
        public Queue<int> Ready { get; } = new();

        public void OnReplicaCompleted(ReplicaRequest request)
        {
            if (request.Status != ReplicaStatus.Ok)
            {
                Console.Out.WriteLine($"fail {request.UserState} {request.Status} {request.Result}");
                Environment.Exit(3);
            }

            Console.Out.WriteLine($"ack {request.UserState}");
            Ready.Enqueue((int)request.UserTag);
        }
    }
}
