using System.Runtime.Versioning;
using Hci.Core.Blocks;
using static Hci.Core.Native.Interop;

namespace Hci.Core.Native;

/// <summary>What the running kernel's io_uring offers, probed once per process.</summary>
[SupportedOSPlatform("linux")]
internal sealed class IoUringSupport
{
    private static readonly Lazy<IoUringSupport> s_current = new(Probe);

    private IoUringSupport(string? unavailableReason, uint features, bool[] ops, uint setupFlags)
    {
        UnavailableReason = unavailableReason;
        Features = features;
        Ops = ops;
        SetupFlags = setupFlags;
    }

    public static IoUringSupport Current => s_current.Value;

    /// <summary>A probe result saying io_uring cannot be used, for tests of the fallback.</summary>
    /// <param name="reason">Why.</param>
    /// <returns>The result.</returns>
    internal static IoUringSupport Unavailable(string reason) => new(reason, 0, [], 0);

    /// <summary>Null when io_uring is usable; otherwise why not and how to fix it.</summary>
    public string? UnavailableReason { get; }

    public bool IsAvailable => UnavailableReason == null;

    public uint Features { get; }

    public bool[] Ops { get; }

    /// <summary>The setup flags this kernel accepts among those we would like.</summary>
    public uint SetupFlags { get; }

    public bool HasExtArg => (Features & IORING_FEAT_EXT_ARG) != 0;

    /// <summary>Rings are single-issuer with deferred task work: completions appear only inside io_uring_enter(GETEVENTS).</summary>
    public bool DefersTaskRun => (SetupFlags & IORING_SETUP_DEFER_TASKRUN) != 0;

    public bool Supports(byte op) => op < Ops.Length && Ops[op];

    private static IoUringSupport Probe()
    {
        if (!OperatingSystem.IsLinux())
        {
            return new IoUringSupport("io_uring exists only on Linux", 0, [], 0);
        }

        string? disabled = null;
        try
        {
            string text = File.ReadAllText("/proc/sys/kernel/io_uring_disabled").Trim();
            if (text != "0")
            {
                disabled = text;
            }
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }

        uint[] candidates =
        [
            // Single issuer with deferred task work (Linux 6.1+): completions are posted only when the owner thread
            // enters to wait, never by interrupting it. The ring starts disabled and its first user enables it,
            // becoming the single issuer.
            IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED,
            IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN,
            IORING_SETUP_COOP_TASKRUN,
            0,
        ];
        int lastErrno = 0;
        string? lastMessage = null;
        foreach (uint flags in candidates)
        {
            try
            {
                using var ring = new IoUring(8, 16, flags);
                var ops = ring.ProbeOps();
                foreach (var (op, name) in new[] { (IORING_OP_READ, "READ"), (IORING_OP_WRITE, "WRITE"), (IORING_OP_READV, "READV"), (IORING_OP_WRITEV, "WRITEV"), (IORING_OP_FSYNC, "FSYNC") })
                {
                    if (!ops[op])
                    {
                        return new IoUringSupport($"the kernel's io_uring lacks IORING_OP_{name} (Linux 5.6 or later is needed)", ring.Features, ops, flags);
                    }
                }

                return new IoUringSupport(null, ring.Features, ops, flags);
            }
            catch (IoUringUnavailableException ex)
            {
                lastErrno = ex.Errno;
                lastMessage = ex.Message;
                if (ex.Errno != Errno.EINVAL)
                {
                    break; // EPERM, ENOSYS, ENOMEM: no flag set will help
                }
            }
        }

        string reason = lastErrno switch
        {
            Errno.ENOSYS => "the kernel has no io_uring (ENOSYS): it is older than 5.1, built without CONFIG_IO_URING, or a seccomp filter hides it",
            Errno.EPERM when disabled != null => $"io_uring is disabled by sysctl kernel.io_uring_disabled={disabled}: set it to 0 (sysctl -w kernel.io_uring_disabled=0), or add this user to kernel.io_uring_group when it is 1",
            Errno.EPERM => "io_uring is not permitted here (EPERM): a seccomp filter (container runtimes often install one) or a security module blocks it",
            Errno.ENOMEM => "io_uring could not lock memory for its rings (ENOMEM): raise RLIMIT_MEMLOCK (ulimit -l)",
            _ => lastMessage ?? "io_uring is unavailable",
        };
        return new IoUringSupport(reason, 0, [], 0);
    }
}
