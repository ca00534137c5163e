using Hci.Core.Blocks;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;

namespace Hci.Hosting;

/// <summary>
/// The names registered with <see cref="HciBuilderExtensions"/>, in registration order (the order devices open and
/// servers start in), with the configuration path each is reported under in messages.
/// </summary>
internal sealed class HciRegistry
{
    private readonly Dictionary<string, Entry> _schedulers = new(StringComparer.Ordinal);

    public string RootPath { get; set; } = "Hci";

    /// <summary>The root section when registered from configuration, to check its keys.</summary>
    public IConfiguration? RootConfiguration { get; set; }

    public List<Entry> Devices { get; } = [];

    public List<Entry> VhostUserBlk { get; } = [];

    public List<Entry> Iscsi { get; } = [];

    public IReadOnlyDictionary<string, Entry> Schedulers => _schedulers;

    /// <summary>The registry of <paramref name="services"/>, or null before AddHci.</summary>
    public static HciRegistry? Find(IServiceCollection services)
        => services.LastOrDefault(d => d.ServiceType == typeof(HciRegistry))?.ImplementationInstance as HciRegistry;

    public Entry? FindDevice(string name) => Devices.Find(d => d.Name == name);

    public Entry? FindVhostUserBlk(string name) => VhostUserBlk.Find(d => d.Name == name);

    public Entry? FindIscsi(string name) => Iscsi.Find(d => d.Name == name);

    public Entry AddDevice(string name, IConfiguration? configuration, Func<IServiceProvider, BlockDevice>? factory = null)
        => Add(Devices, "device", name, PathOf(configuration) ?? $"{RootPath}:Devices:{name}", configuration, factory);

    public Entry AddVhostUserBlk(string name, IConfiguration? configuration)
        => Add(VhostUserBlk, "vhost-user-blk socket", name, PathOf(configuration) ?? $"{RootPath}:VhostUserBlk:{name}", configuration, null);

    public Entry AddIscsi(string name, IConfiguration? configuration)
        => Add(Iscsi, "iSCSI target", name, PathOf(configuration) ?? $"{RootPath}:Iscsi:{name}", configuration, null);

    public Entry AddScheduler(string name, IConfiguration? configuration)
    {
        CheckName(name, "scheduler");
        var entry = new Entry(name, PathOf(configuration) ?? $"{RootPath}:Schedulers:{name}", configuration, null);
        if (!_schedulers.TryAdd(name, entry))
        {
            throw new ArgumentException($"A scheduler named '{name}' is already registered ({_schedulers[name].Path}); give each a name of its own.", nameof(name));
        }

        return entry;
    }

    private static string? PathOf(IConfiguration? configuration) => (configuration as IConfigurationSection)?.Path;

    private static Entry Add(List<Entry> list, string what, string name, string path, IConfiguration? configuration, Func<IServiceProvider, BlockDevice>? factory)
    {
        CheckName(name, what);
        if (list.Find(e => e.Name == name) is { } existing)
        {
            throw new ArgumentException($"A {what} named '{name}' is already registered ({existing.Path}); give each a name of its own.", nameof(name));
        }

        var entry = new Entry(name, path, configuration, factory);
        list.Add(entry);
        return entry;
    }

    private static void CheckName(string name, string what)
    {
        if (string.IsNullOrWhiteSpace(name))
        {
            throw new ArgumentException($"A {what} needs a name (not empty).", nameof(name));
        }
    }

    /// <summary>One registration: its name, its configuration path (and section, when bound from one), and for devices
    /// made by the application its factory.</summary>
    internal sealed record Entry(string Name, string Path, IConfiguration? Configuration, Func<IServiceProvider, BlockDevice>? Factory);
}
