using Hci.Samples.Shared;
using Hci.Samples.VmType;
using Microsoft.Extensions.DependencyInjection;

// hci-vmtype: the paper's VM-type controller. A volume is exported as an iSCSI LUN that any initiator (QEMU's
// libiscsi, Linux open-iscsi, Windows, VMware) can log in to.
if (VmTypeOptions.Load(args, out int exitCode) is not var (options, configuration))
{
    return exitCode;
}

return SampleHost.Run<VmTypeService>(VmTypeOptions.Program, configuration, options.Verbose, services => services.AddSingleton(options));
