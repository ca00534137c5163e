using Hci.Samples.Hybrid;
using Hci.Samples.Shared;
using Microsoft.Extensions.DependencyInjection;

// hci-hybrid: the paper's hybrid host. VMs reach the volume through vhost-user-blk sockets as usual, containers through
// their own sockets with the Hci client (no I/O virtualization), and one scheduler per reactor sees both: the class of a
// request is its socket's, the tenant its connection's.
if (HybridOptions.Load(args, out int exitCode) is not var (options, configuration))
{
    return exitCode;
}

return SampleHost.Run<HybridService>(HybridOptions.Program, configuration, options.Verbose, services => services.AddSingleton(options));
