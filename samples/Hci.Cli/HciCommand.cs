using System.Globalization;
using System.Text;
using System.Text.Json;
using Hci.Core.Cluster;

namespace Hci.Cli;

/// <summary>Parses the command line, runs one command against the cluster store, and maps failures to messages and
/// exit codes (0 done, 1 refused or failed, 2 wrong usage).</summary>
internal static partial class HciCommand
{
    public const string Usage = """
        usage: hci (--data-dir DIR | --etcd URL) COMMAND

          cluster status [--json]                 nodes, devices, liveness and volume count
          volume create NAME --size SIZE [--replicas N] [--min-in-sync N] [--domain-level LEVEL]
                                                  a thin volume (SIZE like 4096, 512M, 10G; N defaults to 3;
                                                  LEVEL device, node, host or rack: what replicas must not share;
                                                  default device with --data-dir, host with --etcd)
          volume list [--json]                    every volume, its owner and health
          volume status NAME [--json]             a volume's extents, replicas and their states
          volume attach NAME --node ID [--force]  make ID the owner (a new epoch); a volume moves from an owner
                                                  that is down (its lease lapsed) as it is, and from one that is
                                                  alive only with --force
          volume detach NAME                      no owner
          volume delete NAME                      delete a detached volume
          volume resize NAME --size SIZE          grow a volume
          cluster key --out FILE                  write a new cluster key (mode 0600) for --cluster-key-file
          dev up --nodes N --dir DIR [--size SIZE]
                                                  a cluster on this machine to try Hci: etcd and N hci-hosttype
                                                  nodes on loopback, in the background, each with a sparse file
                                                  device of SIZE (default 4G) in DIR; prints what to do next
          dev down --dir DIR                      stop the processes dev up started in DIR (the data stays)

        --data-dir DIR  the local cluster store in DIR (one node whose replicas sit on its own devices)
        --etcd URL      the cluster store on etcd (e.g. http://127.0.0.1:2379)
        """;

    public static async Task<int> RunAsync(string[] args, TextWriter output, TextWriter error)
    {
        try
        {
            var cli = new CliArgs(args);
            if (cli.Flag("--help") || cli.Flag("-h") || cli.Words is [] or ["help"])
            {
                output.WriteLine(Usage);
                return cli.Words.Count == 0 && args.Length > 0 && !args.Contains("--help") && !args.Contains("-h") ? 2 : 0;
            }

            if (FindLocal(cli) is { } local)
            {
                return await local(output).ConfigureAwait(false);
            }

            string? dataDir = cli.Option("--data-dir");
            string? etcd = cli.Option("--etcd");
            var run = Find(cli);
            var (store, level) = ClusterStores.Open(dataDir, etcd);
            await using (store.ConfigureAwait(false))
            {
                return await run(new ClusterCatalog(store), level, output).ConfigureAwait(false);
            }
        }
        catch (CliUsageException ex)
        {
            error.WriteLine($"hci: {ex.Message}");
            error.WriteLine("Run hci --help for the commands.");
            return 2;
        }
        catch (Exception ex) when (ex is ClusterCatalogException or ClusterStoreException or PlacementException or DevException)
        {
            error.WriteLine($"hci: {ex.Message}");
            return 1;
        }
    }

    /// <summary>The commands that need no cluster store (dev up/down, cluster key), or null.</summary>
    private static Func<TextWriter, Task<int>>? FindLocal(CliArgs cli)
    {
        var words = cli.Words;
        string verb = words.Count > 1 ? words[1] : string.Empty;
        Func<TextWriter, Task<int>> command;
        switch (words[0], verb)
        {
            case ("cluster", "key"):
            {
                string path = cli.Option("--out") ?? throw new CliUsageException("cluster key needs --out FILE.");
                command = output => Task.FromResult(DevCluster.Key(path, output));
                break;
            }

            case ("dev", "up"):
            {
                int nodes = cli.Int("--nodes", 3);
                string dir = cli.Option("--dir") ?? throw new CliUsageException("dev up needs --dir DIR (where etcd, the devices, sockets and logs go).");
                long size = cli.Option("--size") is null ? 4L << 30 : cli.Size("--size");
                command = output => DevCluster.UpAsync(nodes, dir, size, output);
                break;
            }

            case ("dev", "down"):
            {
                string dir = cli.Option("--dir") ?? throw new CliUsageException("dev down needs --dir DIR (the one given to dev up).");
                command = output => Task.FromResult(DevCluster.Down(dir, output));
                break;
            }

            case ("dev", _):
                throw new CliUsageException($"unknown command 'dev {verb}': dev up or dev down.");
            default:
                return null;
        }

        if (words.Count > 2)
        {
            throw new CliUsageException($"unexpected '{words[2]}'.");
        }

        cli.CheckAllUsed();
        return command;
    }

    private delegate Task<int> Command(ClusterCatalog catalog, FailureDomainLevel defaultLevel, TextWriter output);

    /// <summary>Finds the command and reads its arguments before the store is opened, so usage errors come first.</summary>
    private static Command Find(CliArgs cli)
    {
        var words = cli.Words;
        string group = words[0];
        string verb = words.Count > 1 ? words[1] : string.Empty;
        string Name() => words.Count > 2 ? words[2] : throw new CliUsageException($"volume {verb} needs the volume's name (hci volume {verb} NAME).");
        void NoMoreWords(int count)
        {
            if (words.Count > count)
            {
                throw new CliUsageException($"unexpected '{words[count]}'.");
            }
        }

        Command command;
        switch (group, verb)
        {
            case ("cluster", "status"):
            {
                bool json = cli.Flag("--json");
                NoMoreWords(2);
                command = (catalog, _, output) => ClusterStatusAsync(catalog, json, output);
                break;
            }

            case ("volume", "create"):
            {
                string name = Name();
                long size = cli.Size("--size");
                int replicas = cli.Int("--replicas", 3);
                int? min = cli.Option("--min-in-sync") is null ? null : cli.Int("--min-in-sync", 0);
                string? levelText = cli.Option("--domain-level");
                FailureDomainLevel? level = levelText is null ? null
                    : Enum.TryParse<FailureDomainLevel>(levelText, ignoreCase: true, out var parsed) && !int.TryParse(levelText, out _) ? parsed
                    : throw new CliUsageException($"--domain-level {levelText}: give device, node, host or rack.");
                NoMoreWords(3);
                command = async (catalog, defaultLevel, output) =>
                {
                    var volume = await catalog.CreateVolumeAsync(name, size, replicas, min, level ?? defaultLevel).ConfigureAwait(false);
                    output.WriteLine($"created volume {volume.Name} (id {volume.Id}): {FormatSize(volume.Size)}, {volume.Replicas} replicas across {volume.DomainLevel.ToString().ToLowerInvariant()}s, writes need {volume.MinInSync} in sync; space is taken at first write.");
                    output.WriteLine($"attach it with: hci volume attach {volume.Name} --node ID");
                    return 0;
                };
                break;
            }

            case ("volume", "list"):
            {
                bool json = cli.Flag("--json");
                NoMoreWords(2);
                command = (catalog, _, output) => VolumeListAsync(catalog, json, output);
                break;
            }

            case ("volume", "status"):
            {
                string name = Name();
                bool json = cli.Flag("--json");
                NoMoreWords(3);
                command = (catalog, _, output) => VolumeStatusAsync(catalog, name, json, output);
                break;
            }

            case ("volume", "attach"):
            {
                string name = Name();
                string node = cli.RequiredOption("--node", "node1");
                bool force = cli.Flag("--force");
                NoMoreWords(3);
                command = async (catalog, _, output) =>
                {
                    var volume = await catalog.AttachAsync(name, node, force).ConfigureAwait(false);
                    output.WriteLine($"volume {volume.Name} is attached to {volume.Owner} (epoch {volume.Epoch}).");
                    return 0;
                };
                break;
            }

            case ("volume", "detach"):
            {
                string name = Name();
                NoMoreWords(3);
                command = async (catalog, _, output) =>
                {
                    var volume = await catalog.DetachAsync(name).ConfigureAwait(false);
                    output.WriteLine($"volume {volume.Name} is detached (epoch {volume.Epoch}).");
                    return 0;
                };
                break;
            }

            case ("volume", "delete"):
            {
                string name = Name();
                NoMoreWords(3);
                command = async (catalog, _, output) =>
                {
                    await catalog.DeleteVolumeAsync(name).ConfigureAwait(false);
                    output.WriteLine($"volume {name} is deleted.");
                    return 0;
                };
                break;
            }

            case ("volume", "resize"):
            {
                string name = Name();
                long size = cli.Size("--size");
                NoMoreWords(3);
                command = async (catalog, _, output) =>
                {
                    var volume = await catalog.ResizeVolumeAsync(name, size).ConfigureAwait(false);
                    output.WriteLine($"volume {volume.Name} has {FormatSize(volume.Size)}.");
                    return 0;
                };
                break;
            }

            default:
                throw new CliUsageException($"unknown command '{string.Join(' ', words.Take(2))}'.");
        }

        cli.CheckAllUsed();
        return command;
    }

    private static async Task<int> ClusterStatusAsync(ClusterCatalog catalog, bool json, TextWriter output)
    {
        var map = await catalog.GetMapAsync().ConfigureAwait(false);
        var volumes = await catalog.ListVolumesAsync().ConfigureAwait(false);
        if (json)
        {
            WriteJson(output, w =>
            {
                w.WriteStartObject();
                w.WriteNumber("epoch", map.Epoch);
                w.WriteNumber("volumes", volumes.Count);
                w.WriteStartArray("nodes");
                foreach (var node in map.Nodes)
                {
                    w.WriteStartObject();
                    w.WriteString("id", node.Id);
                    w.WriteString("address", node.Address);
                    w.WriteString("domain", node.Domain);
                    w.WriteBoolean("alive", node.Alive);
                    w.WriteStartArray("devices");
                    foreach (var device in map.DevicesOf(node.Id))
                    {
                        w.WriteStartObject();
                        w.WriteNumber("index", device.Index);
                        w.WriteNumber("capacity", device.Capacity);
                        w.WriteNumber("weight", device.Weight);
                        w.WriteEndObject();
                    }

                    w.WriteEndArray();
                    w.WriteEndObject();
                }

                w.WriteEndArray();
                w.WriteEndObject();
            });
            return 0;
        }

        if (map.Nodes.Count == 0)
        {
            output.WriteLine("no nodes are registered. A node registers when its host starts with --device FILE[:SIZE] (see the README's cluster section).");
        }
        else
        {
            output.WriteLine($"{"NODE",-16} {"STATE",-6} {"ADDRESS",-22} {"DOMAIN",-20} DEVICES");
            foreach (var node in map.Nodes)
            {
                var devices = map.DevicesOf(node.Id);
                string list = string.Join(", ", devices.Select(d => $"{d.Index}: {FormatSize(d.Capacity)} (weight {d.Weight.ToString("0.###", CultureInfo.InvariantCulture)})"));
                output.WriteLine($"{node.Id,-16} {(node.Alive ? "up" : "down"),-6} {node.Address,-22} {(node.Domain.Length == 0 ? "-" : node.Domain),-20} {list}");
            }
        }

        output.WriteLine($"{map.Nodes.Count(n => n.Alive)} of {map.Nodes.Count} nodes up, {map.Devices.Count} devices ({FormatSize(map.Devices.Sum(d => d.Capacity))}), {volumes.Count} volumes.");
        return 0;
    }

    private static async Task<int> VolumeListAsync(ClusterCatalog catalog, bool json, TextWriter output)
    {
        var volumes = await catalog.ListVolumesAsync().ConfigureAwait(false);
        var extents = new List<IReadOnlyList<ExtentRecord>>();
        foreach (var volume in volumes)
        {
            extents.Add(await catalog.GetExtentsAsync(volume.Id).ConfigureAwait(false));
        }

        if (json)
        {
            WriteJson(output, w =>
            {
                w.WriteStartArray();
                for (int i = 0; i < volumes.Count; i++)
                {
                    w.WriteStartObject();
                    WriteVolumeFields(w, volumes[i], extents[i]);
                    w.WriteEndObject();
                }

                w.WriteEndArray();
            });
            return 0;
        }

        if (volumes.Count == 0)
        {
            output.WriteLine("no volumes. Create one with: hci volume create NAME --size 10G --replicas 3");
            return 0;
        }

        output.WriteLine($"{"NAME",-24} {"SIZE",10} {"REPLICAS",8} {"OWNER",-16} {"EPOCH",6} {"ALLOCATED",10}  HEALTH");
        for (int i = 0; i < volumes.Count; i++)
        {
            var v = volumes[i];
            output.WriteLine($"{v.Name,-24} {FormatSize(v.Size),10} {v.Replicas,8} {v.Owner ?? "-",-16} {v.Epoch,6} {$"{extents[i].Count}/{v.ExtentCount}",10}  {Health(extents[i])}");
        }

        return 0;
    }

    private static async Task<int> VolumeStatusAsync(ClusterCatalog catalog, string name, bool json, TextWriter output)
    {
        var volume = await catalog.GetVolumeAsync(name).ConfigureAwait(false)
            ?? throw new ClusterCatalogException(CatalogError.NotFound, $"There is no volume named '{name}': check the name (hci volume list).");
        var extents = await catalog.GetExtentsAsync(volume.Id).ConfigureAwait(false);
        if (json)
        {
            WriteJson(output, w =>
            {
                w.WriteStartObject();
                WriteVolumeFields(w, volume, extents);
                w.WriteStartArray("extents");
                foreach (var extent in extents)
                {
                    w.WriteStartObject();
                    w.WriteNumber("index", extent.Index);
                    w.WriteStartArray("replicas");
                    foreach (var replica in extent.Replicas)
                    {
                        w.WriteStartObject();
                        w.WriteString("node", replica.NodeId);
                        w.WriteNumber("device", replica.Device);
                        w.WriteString("state", StateName(replica.State));
                        w.WriteEndObject();
                    }

                    w.WriteEndArray();
                    w.WriteEndObject();
                }

                w.WriteEndArray();
                w.WriteEndObject();
            });
            return 0;
        }

        output.WriteLine($"volume {volume.Name} (id {volume.Id}): {FormatSize(volume.Size)}, {volume.Replicas} replicas across {volume.DomainLevel.ToString().ToLowerInvariant()}s, min {volume.MinInSync} in sync");
        output.WriteLine($"owner {volume.Owner ?? "none (detached)"}, epoch {volume.Epoch}, created {volume.CreatedAt.ToString("u", CultureInfo.InvariantCulture)}");
        output.WriteLine($"{extents.Count} of {volume.ExtentCount} extents of {FormatSize(volume.ExtentSize)} allocated; {Health(extents)}");
        foreach (var extent in extents)
        {
            output.WriteLine($"  extent {extent.Index,8}: {string.Join("  ", extent.Replicas.Select(r => $"{r.NodeId}/{r.Device} {StateName(r.State)}"))}");
        }

        return 0;
    }

    private static void WriteVolumeFields(Utf8JsonWriter w, VolumeRecord volume, IReadOnlyList<ExtentRecord> extents)
    {
        w.WriteString("name", volume.Name);
        w.WriteNumber("id", volume.Id);
        w.WriteNumber("size", volume.Size);
        w.WriteNumber("replicas", volume.Replicas);
        w.WriteNumber("minInSync", volume.MinInSync);
        w.WriteString("domainLevel", volume.DomainLevel.ToString().ToLowerInvariant());
        w.WriteNumber("extentSize", volume.ExtentSize);
        w.WriteNumber("extentCount", volume.ExtentCount);
        w.WriteNumber("allocatedExtents", extents.Count);
        if (volume.Owner is null)
        {
            w.WriteNull("owner");
        }
        else
        {
            w.WriteString("owner", volume.Owner);
        }

        w.WriteNumber("epoch", volume.Epoch);
        w.WriteBoolean("healthy", extents.All(e => e.Healthy));
        w.WriteString("createdAt", volume.CreatedAt);
    }

    private static string Health(IReadOnlyList<ExtentRecord> extents)
    {
        int degraded = extents.Count(e => !e.Healthy);
        return degraded == 0 ? "healthy" : $"degraded ({degraded} extents have replicas out of sync)";
    }

    private static string StateName(ReplicaState state) => state switch
    {
        ReplicaState.InSync => "in-sync",
        ReplicaState.OutOfSync => "out-of-sync",
        ReplicaState.Resyncing => "resyncing",
        _ => state.ToString(),
    };

    private static string FormatSize(long bytes)
    {
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
        double value = bytes;
        int unit = 0;
        while (value >= 1024 && unit < units.Length - 1)
        {
            value /= 1024;
            unit++;
        }

        return unit == 0 ? $"{bytes} B" : $"{value.ToString(value < 10 ? "0.##" : "0.#", CultureInfo.InvariantCulture)} {units[unit]}";
    }

    private static void WriteJson(TextWriter output, Action<Utf8JsonWriter> write)
    {
        using var stream = new MemoryStream();
        using (var writer = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
        {
            write(writer);
        }

        output.WriteLine(Encoding.UTF8.GetString(stream.ToArray()));
    }
}
