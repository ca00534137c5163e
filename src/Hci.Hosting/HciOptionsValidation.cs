using System.Reflection;
using System.Text;
using Hci.Core.Devices;
using Hci.Scheduling;
using Hci.Transport.Iscsi;
using Hci.Transport.Vhost;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Options;

namespace Hci.Hosting;

/// <summary>
/// Checks Hci's options when the host starts: each failure names the configuration key and says what to fix, such as
/// <c>Hci:Devices:disk0:Size: must be a multiple of 4096 (the logical block size); got 1000.</c>
/// </summary>
internal sealed class HciOptionsValidation(HciRegistry registry)
    : IValidateOptions<HciOptions>, IValidateOptions<HciDeviceOptions>, IValidateOptions<SchedulerOptions>, IValidateOptions<HciVhostUserBlkOptions>, IValidateOptions<HciIscsiTargetOptions>
{
    // The keys each section may have: a misspelt key would otherwise be ignored without a word.
    private static readonly string[] s_rootKeys = [.. Settings(typeof(HciOptions)), "Devices", "Schedulers", "VhostUserBlk", "Iscsi"];
    private static readonly string[] s_deviceKeys = Settings(typeof(HciDeviceOptions));
    private static readonly string[] s_schedulerKeys = Settings(typeof(SchedulerOptions));
    private static readonly string[] s_vhostKeys = [.. Settings(typeof(HciVhostUserBlkOptions), nameof(HciVhostUserBlkOptions.Server)), .. Settings(typeof(VhostUserBlkServerOptions), nameof(VhostUserBlkServerOptions.Reactors))];
    private static readonly string[] s_iscsiKeys = [.. Settings(typeof(HciIscsiTargetOptions), nameof(HciIscsiTargetOptions.Target)), .. Settings(typeof(IscsiTargetOptions))];

    public ValidateOptionsResult Validate(string? name, HciOptions options)
    {
        string path = registry.RootPath;
        var failures = new List<string>();
        CheckKeys(failures, registry.RootConfiguration, path, "Hci", s_rootKeys);
        if (options.Reactors is < 0 or > 256)
        {
            failures.Add($"{path}:Reactors: must be from 0 (each socket its own reactors) to 256; got {options.Reactors}.");
        }

        if (options.PollWindow < TimeSpan.Zero || options.PollWindow > TimeSpan.FromSeconds(1))
        {
            failures.Add($"{path}:PollWindow: must be from 0 to 1 s; got {options.PollWindow}.");
        }

        if (options.HealthProbeTimeout <= TimeSpan.Zero || options.HealthProbeTimeout > TimeSpan.FromMinutes(10))
        {
            failures.Add($"{path}:HealthProbeTimeout: must be positive and at most 00:10:00 (a health check that waits longer is no check); got {options.HealthProbeTimeout}.");
        }

        return Result(failures);
    }

    public ValidateOptionsResult Validate(string? name, HciDeviceOptions options)
    {
        if (name == null || registry.FindDevice(name) is not { Factory: null } entry)
        {
            return ValidateOptionsResult.Skip;
        }

        string path = entry.Path;
        var failures = new List<string>();
        CheckKeys(failures, entry.Configuration, path, "a device", s_deviceKeys);
        if (!HciNames.TryParseEngine(options.Engine, out var engine))
        {
            failures.Add($"{path}:Engine: '{options.Engine}' is not an engine; use {HciNames.Engines}.");
        }

        bool memory = engine is BlockEngine.Memory or BlockEngine.Null;
        if (!memory && string.IsNullOrWhiteSpace(options.Path))
        {
            failures.Add($"{path}:Path: required by the {options.Engine} engine: the regular file or block device behind the device.");
        }

        if (options.LogicalBlockSize is { } lbs && (lbs < 512 || lbs > 65536 || !int.IsPow2(lbs)))
        {
            failures.Add($"{path}:LogicalBlockSize: must be a power of two from 512 to 65536; got {lbs}.");
        }

        // A block device's own sector size applies when none is given: the open checks that case.
        bool blockDevice = !memory && options.LogicalBlockSize == null && (options.Path ?? "").StartsWith("/dev/", StringComparison.Ordinal);
        int block = options.LogicalBlockSize ?? 4096;
        if (options.Size is not { } size)
        {
            if (memory)
            {
                failures.Add($"{path}:Size: required by the {options.Engine} engine: the capacity in bytes, a multiple of {block}.");
            }
        }
        else if (size <= 0)
        {
            failures.Add($"{path}:Size: must be positive; got {size}.");
        }
        else if (!blockDevice && size % block != 0)
        {
            failures.Add($"{path}:Size: must be a multiple of {block} (the logical block size); got {size}.");
        }

        if (options.MaxTransferBytes < block || options.MaxTransferBytes % block != 0)
        {
            failures.Add($"{path}:MaxTransferBytes: must be a positive multiple of {block} (the logical block size); got {options.MaxTransferBytes}.");
        }

        if (!string.IsNullOrWhiteSpace(options.Scheduler)
            && !registry.Schedulers.ContainsKey(options.Scheduler)
            && !HciNames.TryParseSchedulerKind(options.Scheduler, out _))
        {
            failures.Add($"{path}:Scheduler: '{options.Scheduler}' is neither a scheduler defined under {registry.RootPath}:Schedulers nor a kind; define {registry.RootPath}:Schedulers:{options.Scheduler}, or use {HciNames.SchedulerKinds}.");
        }

        return Result(failures);
    }

    public ValidateOptionsResult Validate(string? name, SchedulerOptions options)
    {
        if (name == null || !registry.Schedulers.TryGetValue(name, out var entry))
        {
            return ValidateOptionsResult.Skip;
        }

        var failures = new List<string>();
        CheckKeys(failures, entry.Configuration, entry.Path, "a scheduler", s_schedulerKeys);
        try
        {
            options.Validate();
        }
        catch (ArgumentException e)
        {
            failures.Add($"{entry.Path}: {e.Message}");
        }

        return Result(failures);
    }

    public ValidateOptionsResult Validate(string? name, HciVhostUserBlkOptions options)
    {
        if (name == null || registry.FindVhostUserBlk(name) is not { } entry)
        {
            return ValidateOptionsResult.Skip;
        }

        string path = entry.Path;
        var failures = new List<string>();
        CheckKeys(failures, entry.Configuration, path, "a vhost-user-blk socket", s_vhostKeys);
        CheckDevice(failures, $"{path}:Device", options.Device);
        string socket = options.Server.SocketPath;
        if (string.IsNullOrWhiteSpace(socket))
        {
            failures.Add($"{path}:SocketPath: required: the Unix socket front-ends connect to, such as /run/hci/{name}.sock.");
        }
        else if (Encoding.UTF8.GetByteCount(socket) > 107)
        {
            failures.Add($"{path}:SocketPath: '{socket}' is {Encoding.UTF8.GetByteCount(socket)} bytes, longer than a Unix socket path may be (107); use a shorter path.");
        }
        else
        {
            try
            {
                _ = options.Server.Resolve();
            }
            catch (ArgumentException e)
            {
                failures.Add($"{path}: {e.Message}");
            }
        }

        return Result(failures);
    }

    public ValidateOptionsResult Validate(string? name, HciIscsiTargetOptions options)
    {
        if (name == null || registry.FindIscsi(name) is not { } entry)
        {
            return ValidateOptionsResult.Skip;
        }

        string path = entry.Path;
        var failures = new List<string>();
        CheckKeys(failures, entry.Configuration, path, "an iSCSI target", s_iscsiKeys);
        if (string.IsNullOrWhiteSpace(options.Target.TargetName))
        {
            failures.Add($"{path}:TargetName: required: the target's iSCSI name, such as iqn.2026-11.org.example:{name}.");
        }

        if (options.Luns.Count == 0)
        {
            failures.Add($"{path}:Luns: at least one LUN is required, such as {path}:Luns:1 = the name of a device.");
        }

        foreach (var (lun, device) in options.Luns)
        {
            if (lun is < 0 or > 16383)
            {
                failures.Add($"{path}:Luns:{lun}: a LUN is from 0 to 16383.");
            }

            CheckDevice(failures, $"{path}:Luns:{lun}", device);
        }

        if (options.Target.ChapUser == null && !options.Insecure)
        {
            failures.Add($"{path}:ChapUser: no authentication: give ChapUser and ChapSecret (the secret through the environment or a secrets provider), or set {path}:Insecure to true to let any initiator log in without CHAP.");
        }

        if (failures.Count == 0)
        {
            try
            {
                _ = options.Target.Validate();
            }
            catch (ArgumentException e)
            {
                failures.Add($"{path}: {e.Message}");
            }
        }

        return Result(failures);
    }

    private void CheckDevice(List<string> failures, string key, string? device)
    {
        if (string.IsNullOrWhiteSpace(device))
        {
            failures.Add($"{key}: required: the name of a device under {registry.RootPath}:Devices.");
        }
        else if (registry.FindDevice(device) == null)
        {
            string known = registry.Devices.Count == 0 ? "none is registered" : "the devices are " + string.Join(", ", registry.Devices.Select(d => d.Name));
            failures.Add($"{key}: no device named '{device}' ({known}); add {registry.RootPath}:Devices:{device} or fix the name.");
        }
    }

    private static void CheckKeys(List<string> failures, IConfiguration? configuration, string path, string what, string[] known)
    {
        if (configuration == null)
        {
            return;
        }

        foreach (var child in configuration.GetChildren())
        {
            if (!known.Contains(child.Key, StringComparer.OrdinalIgnoreCase))
            {
                failures.Add($"{path}:{child.Key}: not a setting of {what}; the settings are {string.Join(", ", known)}.");
            }
        }
    }

    private static string[] Settings(Type type, string? except = null)
        => [.. type.GetProperties(BindingFlags.Public | BindingFlags.Instance).Select(p => p.Name).Where(n => n != except)];

    private static ValidateOptionsResult Result(List<string> failures)
        => failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
}
