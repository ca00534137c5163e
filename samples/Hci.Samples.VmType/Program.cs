using System.Globalization;
using System.Runtime.InteropServices;
using Hci.Core.Blocks;
using Hci.Core.Devices;
using Hci.Samples.Shared;
using Hci.Scheduling;
using Hci.Transport.Iscsi;
using Hci.Transport.Scsi;
using Microsoft.Extensions.Logging;

// hci-vmtype: the paper's VM-type controller. A volume is exported as an iSCSI LUN that any initiator (QEMU's
// libiscsi, Linux open-iscsi, Windows, VMware) can log in to.
const string Usage = """
    hci-vmtype: export an Hci volume over iSCSI.

    usage: hci-vmtype --portal HOST:PORT --iqn IQN (--backing FILE_OR_DEVICE [--size BYTES] | --size BYTES) [options]
           hci-vmtype --portal HOST:PORT --iqn IQN (--etcd URL | --data-dir DIR) --node ID --device FILE[:SIZE] [options]
                            as a cluster node: every volume attached to the node is a LUN of the target,
                            numbered in attach order from 1 (a volume keeps its LUN while the process runs)
      --portal HOST:PORT    where to listen (IPv4, [IPv6]:PORT, or PORT for all addresses; default 0.0.0.0:3260)
      --iqn IQN             the target's name, e.g. iqn.2026-11.org.example:vol0
      --backing PATH        file or block device (a file is created at --size if missing)
      --size BYTES          volume size; suffixes k, m, g, t; needed for memory and null
      --ioengine ENGINE     io_uring (default) | file | memory | null
      --lun N               the LUN the volume is exported as (default 1)
      --scheduler KIND      none (default) | fifo | limits | mclock | hybrid: each session's I/O enters it as
                            class vm, its tenant the session's number
      --buffered            use the page cache instead of O_DIRECT
      --poll-us N           how long a connection's thread keeps polling after work before it sleeps
                            (0 to 1000 microseconds, default 100)
      --chap-user U         require CHAP as user U; the secret (at least 12 bytes) comes from
        --chap-secret-file F  the first line of file F, or the environment variable HCI_CHAP_SECRET
                            (--chap-secret S still works but shows the secret to every user in
                            /proc/PID/cmdline, and is warned about)
      --mutual-chap-user U  answer mutual CHAP as U, with the secret from --mutual-chap-secret-file F
                            or HCI_MUTUAL_CHAP_SECRET (--mutual-chap-secret S: as above)
      --allow-initiator IQN only this initiator may log in (repeat for more); default any
      --insecure            allow logins without CHAP (required when no --chap-user is given)
      --verbose             log protocol details (never secrets)
    It logs one line when the portal listens and exits cleanly on SIGINT or SIGTERM.

    """ + ClusterNodeOptions.Usage;

var values = new Dictionary<string, string>();
var allowed = new List<string>();
var cluster = new ClusterNodeOptions();
bool buffered = false, verbose = false, insecure = false;
for (int i = 0; i < args.Length; i++)
{
    string a = args[i];
    switch (a)
    {
        case "-h" or "--help":
            Console.WriteLine(Usage);
            return 0;
        case "--buffered":
            buffered = true;
            continue;
        case "--verbose":
            verbose = true;
            continue;
        case "--insecure":
            insecure = true;
            continue;
        case "--portal" or "--iqn" or "--backing" or "--size" or "--ioengine" or "--lun" or "--scheduler" or "--poll-us" or "--chap-user" or "--chap-secret" or "--mutual-chap-user" or "--mutual-chap-secret"
            or "--chap-secret-file" or "--mutual-chap-secret-file" or "--allow-initiator":
            if (i + 1 >= args.Length)
            {
                Console.Error.WriteLine($"hci-vmtype: {a} needs a value");
                return 2;
            }

            if (a == "--allow-initiator")
            {
                allowed.Add(args[++i]);
                continue;
            }

            values[a] = args[++i];
            continue;
        default:
            if (i + 1 < args.Length && cluster.TryParse(a, () => args[++i], m => new ArgumentException(m)))
            {
                continue;
            }

            Console.Error.WriteLine($"hci-vmtype: unknown option '{a}' (see --help)");
            return 2;
    }
}

string? Get(string key) => values.GetValueOrDefault(key);
var logger = new ConsoleLogger(verbose ? LogLevel.Debug : LogLevel.Information);
BlockDevice? device = null;
IscsiTarget? target = null;
ClusterNode? node = null;
using var stop = new ManualResetEventSlim();
using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop.Set(); });
using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Set(); });
try
{
    if (Get("--iqn") is not { } iqn)
    {
        Console.Error.WriteLine("hci-vmtype: --iqn IQN is required (see --help)");
        return 2;
    }

    cluster.Check(m => new ArgumentException(m));
    var engine = (Get("--ioengine") ?? "io_uring") switch
    {
        "io_uring" => BlockEngine.IoUring,
        "file" => BlockEngine.File,
        "memory" => BlockEngine.Memory,
        "null" => BlockEngine.Null,
        var e => throw new ArgumentException($"--ioengine {e} is not known: use io_uring, file, memory or null"),
    };
    int lun = 1;
    if (Get("--lun") is { } l && (!int.TryParse(l, NumberStyles.None, CultureInfo.InvariantCulture, out lun) || lun > 16383))
    {
        throw new ArgumentException($"--lun {l}: expected a LUN from 0 to 16383");
    }

    SchedulerKind? scheduler = (Get("--scheduler") ?? "none") switch
    {
        "none" => null,
        "fifo" => SchedulerKind.Fifo,
        "limits" => SchedulerKind.Limits,
        "mclock" => SchedulerKind.MClock,
        "hybrid" => SchedulerKind.Hybrid,
        var k => throw new ArgumentException($"--scheduler {k} is not known: use none, fifo, limits, mclock or hybrid"),
    };
    if (cluster.Enabled && (Get("--backing") != null || Get("--size") != null || Get("--lun") != null))
    {
        throw new ArgumentException("as a cluster node, the target exports the volumes attached to the node: --backing, --size and --lun do not apply");
    }

    device = cluster.Enabled ? null : BlockDevices.Open(new BlockDeviceOptions { Engine = engine, Path = Get("--backing"), Size = Get("--size") is { } s ? ParseSize(s) : null, Direct = !buffered }, logger);
    if (device != null && scheduler is { } kind)
    {
        device = new ScheduledBlockDevice(device, new SchedulerOptions { Kind = kind });
    }

    string? chapSecret = Secret("--chap-secret", "--chap-secret-file", "HCI_CHAP_SECRET");
    string? mutualSecret = Secret("--mutual-chap-secret", "--mutual-chap-secret-file", "HCI_MUTUAL_CHAP_SECRET");
    if (Get("--chap-user") == null && !insecure)
    {
        throw new ArgumentException("no authentication: give --chap-user with --chap-secret-file (or HCI_CHAP_SECRET), or --insecure to let any initiator log in without CHAP");
    }

    var luns = device == null ? new Dictionary<int, ScsiDisk>() : new Dictionary<int, ScsiDisk> { [lun] = new ScsiDisk(device, Path.GetFileName(Get("--backing") ?? iqn)) };
    target = new IscsiTarget(
        new IscsiTargetOptions
        {
            Portal = Get("--portal") ?? "0.0.0.0:3260",
            TargetName = iqn,
            ChapUser = Get("--chap-user"),
            ChapSecret = chapSecret,
            MutualChapUser = Get("--mutual-chap-user"),
            MutualChapSecret = mutualSecret,
            AllowedInitiators = allowed,
            PollWindow = Get("--poll-us") is { } us
                ? int.TryParse(us, NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n <= 1000 ? TimeSpan.FromMicroseconds(n) : throw new ArgumentException($"--poll-us {us}: expected 0 to 1000 microseconds")
                : TimeSpan.FromMicroseconds(100),
        },
        luns,
        logger);
    target.Start();
    if (cluster.Enabled)
    {
        var clusterTarget = target;
        var lunOf = new Dictionary<string, int>(StringComparer.Ordinal); // a volume keeps its LUN across detach and attach
        node = new ClusterNode(cluster, logger)
        {
            VolumeAttached = volume =>
            {
                int volumeLun;
                lock (lunOf)
                {
                    if (!lunOf.TryGetValue(volume.Name, out volumeLun))
                    {
                        volumeLun = lunOf.Count + 1;
                        if (volumeLun > 16383)
                        {
                            throw new IOException($"volume {volume.Name}: the target has no LUN left (16383 are in use)");
                        }

                        lunOf.Add(volume.Name, volumeLun);
                    }
                }

                clusterTarget.AddLun(volumeLun, new ScsiDisk(volume, volume.Name));
                SampleLog.VmTypeVolumeReady(logger, volumeLun, iqn, volume.Name, volume.Geometry.Capacity);
                return Task.CompletedTask;
            },
            VolumeDetaching = volume =>
            {
                int volumeLun;
                lock (lunOf)
                {
                    if (!lunOf.TryGetValue(volume.Name, out volumeLun))
                    {
                        return Task.CompletedTask;
                    }
                }

                clusterTarget.RemoveLun(volumeLun);
                SampleLog.VmTypeLunRemoved(logger, volumeLun, volume.Name);
                return Task.CompletedTask;
            },
        };
        node.StartAsync(CancellationToken.None).GetAwaiter().GetResult();
        SampleLog.VmTypeClusterReady(logger, cluster.NodeId, iqn, target.LocalEndPoint);
    }
    else
    {
        SampleLog.VmTypeReady(logger, iqn, target.LocalEndPoint, lun, Get("--backing") ?? engine.ToString(), device!.Geometry.Capacity, device.Geometry.LogicalBlockSize, Get("--scheduler") ?? "none");
    }

    long allocatedAtReady = GC.GetTotalAllocatedBytes(precise: true);
    stop.Wait();
    await target.DisposeAsync(); // closes every connection, which accounts its commands
    if (node != null)
    {
        await node.DisposeAsync(); // detaches its volumes (the target no longer uses them)
        node = null;
    }

    long allocated = GC.GetTotalAllocatedBytes(precise: true) - allocatedAtReady;
    foreach (string line in Hci.Core.Blocks.RequestStages.Snapshot().Format("hci-vmtype: stages: "))
    {
        SampleLog.Stages(logger, line);
    }

    long commands = target.CommandsServed;
    SampleLog.VmTypeStopping(
        logger,
        commands,
        allocated,
        commands == 0 ? 0 : (double)allocated / commands);
    target = null;
    return 0;
}
catch (Exception e) when (e is ArgumentException or IOException or UnauthorizedAccessException or PlatformNotSupportedException or Hci.Core.Cluster.ClusterStoreException or Hci.Core.Cluster.ClusterCatalogException)
{
    SampleLog.HostFailed(logger, "hci-vmtype", e.Message);
    return 1;
}
finally
{
    if (target != null)
    {
        await target.DisposeAsync();
    }

    if (node != null)
    {
        await node.DisposeAsync();
    }

    device?.Dispose();
}

// A secret from its file (first line), else the environment, else the command line (warned: any user can read it).
string? Secret(string flag, string fileFlag, string variable)
{
    if (Get(fileFlag) is { } file)
    {
        try
        {
            return File.ReadLines(file).FirstOrDefault()?.TrimEnd('\r') ?? throw new ArgumentException($"{fileFlag} {file} is empty");
        }
        catch (FileNotFoundException)
        {
            throw new ArgumentException($"{fileFlag} {file}: no such file");
        }
    }

    if (Environment.GetEnvironmentVariable(variable) is { Length: > 0 } fromEnvironment)
    {
        return fromEnvironment;
    }

    if (Get(flag) is { } onCommandLine)
    {
        SampleLog.SecretOnCommandLine(logger, flag, fileFlag, variable);
        return onCommandLine;
    }

    return null;
}

static long ParseSize(string text) =>
    SizeText.TryParse(text, out long bytes) ? bytes : throw new ArgumentException($"--size {text}: expected a positive size in bytes, optionally with k, m, g or t");
