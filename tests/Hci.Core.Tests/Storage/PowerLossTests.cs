using Hci.Core.Blocks;
using Hci.Core.Buffers;
using Hci.Core.Devices;
using Hci.Core.Devices.Decorators;
using Hci.Core.Replication;
using Hci.Core.Storage;

namespace Hci.Core.Tests.Storage;

public sealed class PowerLossTests
{
    private const int Block = StoreHarness.Block;
    private const long ExtentSize = 256 * 1024;

    [Fact]
    public async Task ThePowerLossDeviceKeepsOnlyWhatAFlushOrFuaMadeDurable()
    {
        await using var device = new PowerLossBlockDevice(new MemoryBlockDevice(1 << 20));
        using var buffer = new AlignedBuffer(Block);
        buffer.Span.Fill(1);
        await device.WriteAsync(0, buffer.Memory);
        await device.FlushAsync();
        buffer.Span.Fill(2);
        await device.WriteAsync(0, buffer.Memory);
        buffer.Span.Fill(3);
        await device.WriteAsync(Block, buffer.Memory, BlockRequestFlags.ForceUnitAccess);
        buffer.Span.Fill(4);
        await device.WriteAsync(2 * Block, buffer.Memory);
        await device.ReadAsync(0, buffer.Memory);
        Assert.Equal(2, buffer.Span[0]); // reads see the cache
        Assert.Equal(2, device.VolatileBlocks);
        Assert.Equal(0, await device.SimulateCrashAsync());
        await device.ReadAsync(0, buffer.Memory);
        Assert.Equal(1, buffer.Span[0]);
        await device.ReadAsync(Block, buffer.Memory);
        Assert.Equal(3, buffer.Span[0]);
        await device.ReadAsync(2 * Block, buffer.Memory);
        Assert.Equal(0, buffer.Span[0]);
    }

    public static TheoryData<int> Batches() => [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];

    /// <summary>300 seeds in ten batches: random writes (some FUA), flushes and crash points, with torn survivors.</summary>
    [Theory]
    [MemberData(nameof(Batches))]
    public void AfterACrashAtAnyPointEveryDurableWriteReadsBackAndNothingTornIsReportedAsCorruption(int batch)
    {
        long torn = 0;
        for (int seed = batch * 30; seed < (batch + 1) * 30; seed++)
        {
            torn += RunSeed(seed);
        }

        Assert.True(torn > 0, "no crash tore a block: the test would not see a reconciliation bug");
    }

    private static long RunSeed(int seed)
    {
        var rng = new Random(seed);
        using var device = new PowerLossBlockDevice(new MemoryBlockDevice(8L << 20));
        var model = new Model();
        using (var store = StoreHarness.Format(device, ExtentSize, maxVolumes: 4))
        using (var driver = new Driver(store, model))
        {
            int steps = rng.Next(1, 400);
            for (int i = 0; i < steps; i++)
            {
                int dice = rng.Next(100);
                if (dice < 55 && driver.HasFreeSlot)
                {
                    ulong volume = (ulong)rng.Next(1, 3);
                    long extent = rng.Next(0, 6);
                    int blocks = rng.Next(1, 17);
                    long offset = (long)rng.Next(0, (int)(ExtentSize / Block) - blocks + 1) * Block;
                    driver.SubmitWrite(volume, extent, offset, blocks, fua: rng.Next(4) == 0);
                }
                else if (dice < 62 && driver.HasFreeSlot)
                {
                    driver.SubmitFlush();
                }
                else
                {
                    driver.Poll();
                }
            }

            driver.Abandon(); // power goes: nothing more reaches the device
            device.CutPower();
        }

        device.SimulateCrashAsync(rng.Next(4) == 0 ? null : rng).GetAwaiter().GetResult();

        using (var store = StoreHarness.Open(device))
        using (var h = new StoreHarness(store))
        {
            foreach (var ((volume, extent, block), writes) in model.Blocks)
            {
                long at = (long)block * Block;
                var status = h.Read(volume, extent, at, Block);
                Assert.True(status == ReplicaStatus.Ok, $"seed {seed}: volume {volume} extent {extent} block {block} read {status}");
                long id = Pattern.IdOf(h.Buffer.Span[..Block], volume, extent, at);
                long durable = model.DurableId(volume, extent, block);
                Assert.True(id != -2, $"seed {seed}: block {block} of {volume}/{extent} holds no write of it");
                Assert.True(id == -1 || writes.Contains(id), $"seed {seed}: block holds write {id}, never written there");
                if (!(id >= durable || (id >= 0 && model.Overlapped(id, durable))))
                {
                    var lines = string.Join("; ", writes.Select(w => $"{w}:{model.Writes[w].Offset / Block}+{model.Writes[w].Blocks} t={model.Times[w]} fua={model.Fua.Contains(w)} durable={model.Durable.Contains(w)}"));
                    Assert.Fail($"seed {seed}: {lines}");
                }

                Assert.True(id >= durable || (id >= 0 && model.Overlapped(id, durable)), $"seed {seed}: volume {volume} extent {extent} block {block} holds {id}, older than the durable write {durable} and not in flight with it");
            }

            Assert.Equal(0, store.Stats.ChecksumMismatches);
            return store.Stats.TornBlocksReconciled;
        }
    }

    /// <summary>What was written where, and what is durable.</summary>
    private sealed class Model
    {
        public Dictionary<(ulong Volume, long Extent, int Block), List<long>> Blocks { get; } = new();

        public Dictionary<long, (ulong Volume, long Extent, long Offset, int Blocks)> Writes { get; } = new();

        public HashSet<long> Durable { get; } = new();

        public HashSet<long> Fua { get; } = new();

        public List<long> Acknowledged { get; } = new();

        /// <summary>When each write was submitted and answered, in driver steps (answered: long.MaxValue if never).</summary>
        public Dictionary<long, (long Submitted, long Answered)> Times { get; } = new();

        /// <summary>True when <paramref name="older"/> was still in flight when <paramref name="newer"/> was submitted:
        /// overlapping writes in flight together may land in either order.</summary>
        public bool Overlapped(long older, long newer) => Times[older].Answered > Times[newer].Submitted;

        public long DurableId(ulong volume, long extent, int block)
        {
            long best = -1;
            foreach (long id in Blocks[(volume, extent, block)])
            {
                if (Durable.Contains(id))
                {
                    best = Math.Max(best, id);
                }
            }

            return best;
        }
    }

    /// <summary>Keeps up to eight requests in flight on one queue.</summary>
    private sealed unsafe class Driver : IReplicaCompletionHandler, IDisposable
    {
        private readonly ReplicaStoreQueue _queue;
        private readonly Model _model;
        private readonly Stack<(ReplicaRequest Request, AlignedBuffer Buffer)> _free = new();
        private readonly List<(ReplicaRequest Request, AlignedBuffer Buffer)> _all = new();
        private readonly Dictionary<ReplicaRequest, long[]> _flushCovers = new();
        private long _nextId = 1;
        private long _tick;
        private bool _abandoned;

        public Driver(ReplicaStore store, Model model)
        {
            _queue = store.CreateQueue();
            _model = model;
            for (int i = 0; i < 8; i++)
            {
                var slot = (new ReplicaRequest(1) { Handler = this }, new AlignedBuffer(16 * Block));
                slot.Item1.UserState = slot.Item2;
                _free.Push(slot);
                _all.Add(slot);
            }
        }

        public bool HasFreeSlot => _free.Count > 0;

        public void SubmitWrite(ulong volume, long extent, long offset, int blocks, bool fua)
        {
            var (r, buffer) = _free.Pop();
            long id = _nextId++;
            r.Reset();
            r.Operation = ReplicaOperation.Write;
            r.VolumeId = volume;
            r.Extent = extent;
            r.Offset = offset;
            r.Epoch = 1;
            r.Flags = fua ? BlockRequestFlags.ForceUnitAccess : BlockRequestFlags.None;
            r.UserTag = id;
            Pattern.Fill(buffer.Span[..(blocks * Block)], volume, extent, offset, id);
            r.AddSegment(buffer.Pointer, blocks * Block);
            _model.Writes[id] = (volume, extent, offset, blocks);
            _model.Times[id] = (++_tick, long.MaxValue);
            if (fua)
            {
                _model.Fua.Add(id);
            }
            for (int b = 0; b < blocks; b++)
            {
                var key = (volume, extent, (int)(offset / Block) + b);
                if (!_model.Blocks.TryGetValue(key, out var list))
                {
                    _model.Blocks[key] = list = [];
                }

                list.Add(id);
            }

            _queue.Submit(r);
        }

        public void SubmitFlush()
        {
            var (r, _) = _free.Pop();
            r.Reset();
            r.Operation = ReplicaOperation.Flush;
            r.VolumeId = 1;
            r.Epoch = 1;
            r.UserTag = 0;
            _flushCovers[r] = [.. _model.Acknowledged];
            _queue.Submit(r);
        }

        public void Poll() => _queue.Poll();

        public void Abandon() => _abandoned = true;

        public void OnReplicaCompleted(ReplicaRequest request)
        {
            if (_abandoned)
            {
                _free.Push((request, (AlignedBuffer)request.UserState!));
                return; // after the power cut: nobody sees these answers
            }

            Assert.Equal(ReplicaStatus.Ok, request.Status);
            if (request.Operation == ReplicaOperation.Write)
            {
                _model.Acknowledged.Add(request.UserTag);
                _model.Times[request.UserTag] = (_model.Times[request.UserTag].Submitted, ++_tick);
                if ((request.Flags & BlockRequestFlags.ForceUnitAccess) != 0)
                {
                    _model.Durable.Add(request.UserTag);
                }
            }
            else
            {
                foreach (long id in _flushCovers[request])
                {
                    _model.Durable.Add(id);
                }
            }

            _free.Push((request, (AlignedBuffer)request.UserState!));
        }

        public void Dispose()
        {
            // The power is gone: answers that come now were never seen by anyone; drain only to free the queue.
            _queue.Dispose();
            foreach (var (r, b) in _all)
            {
                r.Dispose();
                ((IDisposable)b).Dispose();
            }
        }
    }
}
