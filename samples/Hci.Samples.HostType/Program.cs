using Hci.Samples.HostType;
using Hci.Samples.Shared;
using Microsoft.Extensions.DependencyInjection;

// hci-hosttype: the paper's host-type controller. Volumes are exported as vhost-user-blk, so a VM's virtio-blk
// requests reach the device through shared memory, and processes reach the same back-end with the Hci client.
if (HostOptions.Load(args, out int exitCode) is not var (options, configuration))
{
    return exitCode;
}

return SampleHost.Run<HostTypeService>(HostOptions.Program, configuration, options.Verbose, services => services.AddSingleton(options));
