using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Hci.Core.Buffers;
using Hci.Core.Devices;
using Hci.Transport.Iscsi;
using Hci.Transport.Scsi;
using Hci.Transport.Vhost;
using Hci.Transport.Virtio;
using SharpFuzz;
using Tmds.Linux;

namespace Hci.Fuzz;

/// <summary>
/// Coverage-guided fuzzing entries for AFL++ through SharpFuzz (see tests/fuzz/run), one per parser:
/// <list type="bullet">
/// <item><c>virtio</c>: a descriptor table and buffers in guest memory; <see cref="SplitVirtqueue.WalkChain"/> then
/// <see cref="VirtioBlkRequest.Parse"/>; every segment must lie inside guest memory and the data must add up.</item>
/// <item><c>vhost</c>: a byte stream of vhost-user messages through <see cref="VhostUserChannel.Receive(Span{byte}, Span{int}, out VhostUserHeader, out int)"/>
/// over a socket pair, each payload through the message readers and a memory table through <see cref="GuestMemory"/>.</item>
/// <item><c>iscsi</c>: a basic header segment, then login text through <see cref="IscsiText.Parse"/>,
/// <see cref="IscsiNegotiation.Respond"/> and back through <see cref="IscsiText.Format"/>, which must parse again.</item>
/// <item><c>scsi</c>: a CDB, a nexus, a direction, an expected length and data-out bytes through
/// <see cref="ScsiDisk.ExecuteAsync"/> on a memory device; the answer must be a SCSI status with valid sense.</item>
/// </list>
/// An invariant broken throws, which AFL++ records as a crash. <c>Hci.Fuzz TARGET FILE...</c> replays inputs
/// without AFL++ (to reproduce a crash, or to check a corpus); <c>Hci.Fuzz TARGET</c> alone runs under afl-fuzz.
/// </summary>
public static unsafe class Program
{
    private const ulong GuestBase = 0x10000;
    private const int GuestSize = 1 << 16;
    private static byte* s_guest;
    private static MemoryBlockDevice? s_device;
    private static AlignedBuffer? s_buffer;

    public static int Main(string[] args)
    {
        if (args.Length == 0 || !Targets.TryGetValue(args[0], out var target))
        {
            Console.Error.WriteLine($"usage: Hci.Fuzz {{{string.Join('|', Targets.Keys)}}} [FILE...]   (no file: run under afl-fuzz)");
            return 2;
        }

        if (args.Length > 1)
        {
            foreach (string file in args[1..])
            {
                target(File.ReadAllBytes(file));
            }

            return 0;
        }

        Fuzzer.OutOfProcess.Run(stream =>
        {
            using var copy = new MemoryStream();
            stream.CopyTo(copy);
            target(copy.GetBuffer().AsSpan(0, (int)copy.Length));
        });
        return 0;
    }

    private delegate void Target(ReadOnlySpan<byte> input);

    private static readonly Dictionary<string, Target> Targets = new()
    {
        ["virtio"] = Virtio,
        ["vhost"] = Vhost,
        ["iscsi"] = Iscsi,
        ["scsi"] = Scsi,
    };

    private static void Check(bool condition, string what)
    {
        if (!condition)
        {
            throw new InvalidOperationException("invariant broken: " + what);
        }
    }

    // Input: [0] queue size exponent, [1..3) head, then guest memory from offset 0 (descriptor table first).
    private static void Virtio(ReadOnlySpan<byte> input)
    {
        if (input.Length < 3)
        {
            return;
        }

        if (s_guest == null)
        {
            s_guest = (byte*)NativeMemory.AlignedAlloc(GuestSize, 4096);
        }

        var guest = new Span<byte>(s_guest, GuestSize);
        guest.Clear();
        input[3..Math.Min(input.Length, 3 + GuestSize)].CopyTo(guest);
        var memory = new GuestMemory([new GuestMemoryRegion(GuestBase, GuestSize, 0x7f00_0000_0000, (nint)s_guest)]);
        int size = 1 << (input[0] % 9);
        var vq = new SplitVirtqueue(memory, size, (nint)s_guest, (nint)(s_guest + 0x8000), (nint)(s_guest + 0xC000));
        var chain = new ChainSegment[258];
        var data = new ChainSegment[258];
        ushort head = BinaryPrimitives.ReadUInt16LittleEndian(input[1..]);
        var status = vq.WalkChain(head, chain, out int count);
        if (status != ChainStatus.Ok)
        {
            return;
        }

        foreach (var s in chain.AsSpan(0, count))
        {
            Check(s.Length > 0 && s.Address >= (nint)s_guest && s.Address + s.Length <= (nint)(s_guest + GuestSize), $"walked segment 0x{s.Address:x}+{s.Length} outside guest memory");
        }

        var error = VirtioBlkRequest.Parse(chain.AsSpan(0, count), data, out var request);
        if (error is VirtioBlkParseError.NoStatus or VirtioBlkParseError.ShortHeader)
        {
            return;
        }

        Check(request.Status >= (nint)s_guest && request.Status < (nint)(s_guest + GuestSize), "status byte outside guest memory");
        long total = 0;
        foreach (var s in data.AsSpan(0, request.DataCount))
        {
            Check(s.Length > 0 && s.Address >= (nint)s_guest && s.Address + s.Length <= (nint)(s_guest + GuestSize), $"data segment 0x{s.Address:x}+{s.Length} outside guest memory");
            total += s.Length;
        }

        Check(total == request.DataLength, "data segments do not add up to the data length");
    }

    // Input: a stream of vhost-user messages as a front-end would write them.
    private static void Vhost(ReadOnlySpan<byte> input)
    {
        int* pair = stackalloc int[2];
        Check(LibC.socketpair(LibC.AF_UNIX, LibC.SOCK_STREAM | LibC.SOCK_CLOEXEC, 0, pair) == 0, "socketpair");
        using var channel = new VhostUserChannel(pair[1]);
        fixed (byte* p = input)
        {
            for (int sent = 0; sent < input.Length;)
            {
                long n = LibC.send(pair[0], p + sent, input.Length - sent, LibC.MSG_NOSIGNAL | LibC.MSG_DONTWAIT);
                if (n <= 0)
                {
                    break;
                }

                sent += (int)n;
            }
        }

        LibC.close(pair[0]);
        var payload = new byte[VhostUserHeader.MaxPayload];
        Span<int> fds = stackalloc int[VhostUserChannel.MaxFds];
        Span<(ulong Guest, ulong Size, ulong User, ulong MmapOffset)> table = stackalloc (ulong, ulong, ulong, ulong)[VhostUserMessage.MaxMemTableRegions];
        for (int messages = 0; messages < 64; messages++)
        {
            var error = channel.Receive(payload, fds, out var header, out int fdCount);
            if (error != VhostUserError.None)
            {
                return;
            }

            Check(header.Size <= VhostUserHeader.MaxPayload && fdCount == 0, "a message larger than the maximum, or descriptors from nowhere");
            var body = payload.AsSpan(0, (int)header.Size);
            VhostUserMessage.ReadU64(body, out _);
            bool state = VhostUserMessage.ReadVringState(body, 8, out int index, out _) == VhostUserError.None;
            bool addr = VhostUserMessage.ReadVringAddr(body, 8, out int addrIndex, out _, out _, out _) == VhostUserError.None;
            bool fd = VhostUserMessage.ReadVringFd(body, 1, 8, out int fdIndex, out _) == VhostUserError.None;
            Check((!state || index is >= 0 and < 8) && (!addr || addrIndex is >= 0 and < 8) && (!fd || fdIndex is >= 0 and < 8), "queue index out of range");
            if (VhostUserMessage.ReadConfig(body, VhostUserMessage.MaxConfig, out uint offset, out uint size, out var config) == VhostUserError.None)
            {
                Check(offset + size <= VhostUserMessage.MaxConfig && config.Length <= body.Length, "config range");
            }

            if (VhostUserMessage.ReadMemTable(body, body.Length > 0 ? Math.Min((int)body[0], VhostUserMessage.MaxMemTableRegions) : 0, table, out int count) == VhostUserError.None)
            {
                var regions = new List<GuestMemoryRegion>();
                for (int i = 0; i < count; i++)
                {
                    regions.Add(new GuestMemoryRegion(table[i].Guest, table[i].Size, table[i].User, unchecked((nint)0x1000_0000_0000)));
                }

                try
                {
                    var memory = new GuestMemory(regions);
                    foreach (var r in table[..count])
                    {
                        if (memory.TryTranslate(r.Guest, Math.Min(r.Size, 4096), out nint pointer))
                        {
                            Check(pointer != 0, "translated to null");
                        }

                        memory.TryTranslateUser(r.User + r.Size - 1, 2, out _);
                    }
                }
                catch (ArgumentException)
                {
                    // A table the session refuses, as it does.
                }
            }

        }
    }

    // Input: 48 bytes of basic header segment, then login or text data.
    private static void Iscsi(ReadOnlySpan<byte> input)
    {
        if (input.Length < IscsiHeader.Length)
        {
            return;
        }

        var bytes = input[..IscsiHeader.Length].ToArray();
        var h = new IscsiHeader(bytes);
        Check(h.DataSegmentLength is >= 0 and <= IscsiHeader.MaxDataSegmentLength && h.AdditionalHeaderLength >= 0 && h.PaddedDataSegmentLength >= h.DataSegmentLength, "header lengths");
        _ = (h.Opcode, h.Immediate, h.Final, h.Flags, h.Lun, h.InitiatorTaskTag, h.Field(20), h.Field(24), h.Field(28));
        var text = input[IscsiHeader.Length..];
        var pairs = new List<KeyValuePair<string, string>>();
        if (IscsiText.Parse(text, pairs) != IscsiTextError.None)
        {
            return;
        }

        foreach (var (_, value) in pairs)
        {
            IscsiNegotiation.TryParseNumber(value, out _);
        }

        var target = new IscsiSessionParameters { MaxRecvDataSegmentLength = 262144, MaxBurstLength = 1 << 20, FirstBurstLength = 262144 };
        var session = new IscsiSessionParameters();
        var response = new List<KeyValuePair<string, string>>();
        IscsiNegotiation.Respond(pairs, target, session, response);
        Check(session.MaxRecvDataSegmentLength is >= 512 and <= IscsiHeader.MaxDataSegmentLength, $"MaxRecvDataSegmentLength {session.MaxRecvDataSegmentLength}");
        Check(session.MaxSendDataSegmentLength is >= 512 and <= IscsiHeader.MaxDataSegmentLength, $"MaxSendDataSegmentLength {session.MaxSendDataSegmentLength}");
        Check(session.FirstBurstLength <= session.MaxBurstLength && session.MaxBurstLength > 0, $"bursts {session.FirstBurstLength}/{session.MaxBurstLength}");
        var again = new List<KeyValuePair<string, string>>();
        Check(IscsiText.Parse(IscsiText.Format(response), again) == IscsiTextError.None && again.Count == response.Count, "the response does not parse back");
    }

    // Input: [0..16) CDB, [16] nexus (bits 0-1) and data-out (bit 2), [17..20) expected length, then data-out bytes.
    private static void Scsi(ReadOnlySpan<byte> input)
    {
        if (input.Length < 20)
        {
            return;
        }

        s_device ??= new MemoryBlockDevice(1 << 20, logicalBlockSize: 512, maxTransferBytes: 64 << 10);
        s_buffer ??= new AlignedBuffer(1 << 20);
        var disk = new ScsiDisk(s_device, "fuzz");
        var task = new ScsiTask();
        input[..16].CopyTo(task.Cdb);
        task.Nexus = 1 + (input[16] & 3);
        task.DataOut = (input[16] & 4) != 0;
        task.ExpectedLength = Math.Min((input[17] << 16) | (input[18] << 8) | input[19], s_buffer.Length);
        task.Buffer = task.ExpectedLength > 0 || (input[16] & 8) != 0 ? s_buffer : null;
        s_buffer.Span.Clear();
        input[20..Math.Min(input.Length, 20 + s_buffer.Length)].CopyTo(s_buffer.Span);
        var run = disk.ExecuteAsync(task).AsTask();
        Check(run.Wait(TimeSpan.FromSeconds(5)), "a command did not complete in 5 s");
        Check(task.Status is ScsiStatus.Good or ScsiStatus.CheckCondition or ScsiStatus.ConditionMet or ScsiStatus.ReservationConflict, $"status 0x{task.Status:x2}");
        Check(task.DataLength is >= 0 and <= 16 << 20, $"data length {task.DataLength}");
        if (task.Status == ScsiStatus.CheckCondition)
        {
            Check((task.Sense[0] & 0x7F) == 0x70 && (task.Sense[2] & 0x0F) is >= 1 and <= 0xE, "sense");
        }
    }
}
