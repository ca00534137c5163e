using System.Diagnostics;
using System.Runtime.InteropServices;
using Hci.Core.Native;
using Tmds.Linux;

namespace Hci.Core.Tests;

/// <summary>
/// Tmds.LibC does not check its io_uring structs; these tests hold them, and Hci's own constants,
/// against the kernel's UAPI header compiled by the C compiler.
/// </summary>
public sealed class IoUringLayoutTests
{
    private static readonly Lazy<Dictionary<string, long>> s_kernel = new(ReadKernelLayout);

    public static TheoryData<string, long> ManagedLayout()
    {
        var data = new TheoryData<string, long>
        {
            { "sizeof(io_uring_sqe)", Marshal.SizeOf<io_uring_sqe>() },
            { "sizeof(io_uring_cqe)", Marshal.SizeOf<io_uring_cqe>() },
            { "sizeof(io_uring_params)", Marshal.SizeOf<io_uring_params>() },
            { "sizeof(io_sqring_offsets)", Marshal.SizeOf<io_sqring_offsets>() },
            { "sizeof(io_cqring_offsets)", Marshal.SizeOf<io_cqring_offsets>() },
            { "sizeof(io_uring_probe)", Marshal.SizeOf<io_uring_probe>() },
            { "sizeof(io_uring_probe_op)", Marshal.SizeOf<io_uring_probe_op>() },
            { "sizeof(io_uring_getevents_arg)", Marshal.SizeOf<Interop.io_uring_getevents_arg>() },
            { "sizeof(__kernel_timespec)", Marshal.SizeOf<Interop.kernel_timespec>() },
            { "sizeof(iovec)", Marshal.SizeOf<Hci.Core.Blocks.BlockSegment>() },
        };
        foreach (var f in new[] { "opcode", "flags", "ioprio", "fd", "off", "addr", "len", "rw_flags", "fsync_flags", "user_data", "buf_index" })
        {
            data.Add($"io_uring_sqe.{f}", Marshal.OffsetOf<io_uring_sqe>(f));
        }

        foreach (var f in new[] { "user_data", "res", "flags" })
        {
            data.Add($"io_uring_cqe.{f}", Marshal.OffsetOf<io_uring_cqe>(f));
        }

        foreach (var f in new[] { "sq_entries", "cq_entries", "flags", "sq_thread_cpu", "sq_thread_idle", "features", "wq_fd", "sq_off", "cq_off" })
        {
            data.Add($"io_uring_params.{f}", Marshal.OffsetOf<io_uring_params>(f));
        }

        foreach (var f in new[] { "head", "tail", "ring_mask", "ring_entries", "flags", "dropped", "array" })
        {
            data.Add($"io_sqring_offsets.{f}", Marshal.OffsetOf<io_sqring_offsets>(f));
        }

        foreach (var f in new[] { "head", "tail", "ring_mask", "ring_entries", "overflow", "cqes" })
        {
            data.Add($"io_cqring_offsets.{f}", Marshal.OffsetOf<io_cqring_offsets>(f));
        }

        foreach (var f in new[] { "last_op", "ops_len" })
        {
            data.Add($"io_uring_probe.{f}", Marshal.OffsetOf<io_uring_probe>(f));
        }

        foreach (var f in new[] { "op", "flags" })
        {
            data.Add($"io_uring_probe_op.{f}", Marshal.OffsetOf<io_uring_probe_op>(f));
        }

        data.Add("io_uring_getevents_arg.ts", Marshal.OffsetOf<Interop.io_uring_getevents_arg>("ts"));
        data.Add("iovec.iov_len", Marshal.OffsetOf<Hci.Core.Blocks.BlockSegment>("<Length>k__BackingField"));

        foreach (var (name, value) in new (string, long)[]
        {
            ("IORING_OP_READV", Interop.IORING_OP_READV), ("IORING_OP_WRITEV", Interop.IORING_OP_WRITEV), ("IORING_OP_FSYNC", Interop.IORING_OP_FSYNC),
            ("IORING_OP_READ_FIXED", Interop.IORING_OP_READ_FIXED), ("IORING_OP_WRITE_FIXED", Interop.IORING_OP_WRITE_FIXED), ("IORING_OP_POLL_ADD", Interop.IORING_OP_POLL_ADD),
            ("IORING_OP_FALLOCATE", Interop.IORING_OP_FALLOCATE), ("IORING_OP_READ", Interop.IORING_OP_READ), ("IORING_OP_WRITE", Interop.IORING_OP_WRITE),
            ("IOSQE_FIXED_FILE", Interop.IOSQE_FIXED_FILE), ("IORING_SETUP_CQSIZE", Interop.IORING_SETUP_CQSIZE), ("IORING_SETUP_CLAMP", Interop.IORING_SETUP_CLAMP),
            ("IORING_SETUP_SUBMIT_ALL", Interop.IORING_SETUP_SUBMIT_ALL), ("IORING_SETUP_COOP_TASKRUN", Interop.IORING_SETUP_COOP_TASKRUN),
            ("IORING_SETUP_SINGLE_ISSUER", Interop.IORING_SETUP_SINGLE_ISSUER), ("IORING_SETUP_DEFER_TASKRUN", Interop.IORING_SETUP_DEFER_TASKRUN),
            ("IORING_FSYNC_DATASYNC", Interop.IORING_FSYNC_DATASYNC), ("IORING_ENTER_GETEVENTS", Interop.IORING_ENTER_GETEVENTS), ("IORING_ENTER_EXT_ARG", Interop.IORING_ENTER_EXT_ARG),
            ("IORING_FEAT_SINGLE_MMAP", Interop.IORING_FEAT_SINGLE_MMAP), ("IORING_FEAT_NODROP", Interop.IORING_FEAT_NODROP), ("IORING_FEAT_SUBMIT_STABLE", Interop.IORING_FEAT_SUBMIT_STABLE),
            ("IORING_FEAT_EXT_ARG", Interop.IORING_FEAT_EXT_ARG), ("IORING_REGISTER_BUFFERS", Interop.IORING_REGISTER_BUFFERS), ("IORING_UNREGISTER_BUFFERS", Interop.IORING_UNREGISTER_BUFFERS),
            ("IORING_REGISTER_FILES", Interop.IORING_REGISTER_FILES), ("IORING_UNREGISTER_FILES", Interop.IORING_UNREGISTER_FILES), ("IORING_REGISTER_PROBE", Interop.IORING_REGISTER_PROBE),
            ("IORING_OFF_SQ_RING", (long)Interop.IORING_OFF_SQ_RING), ("IORING_OFF_CQ_RING", (long)Interop.IORING_OFF_CQ_RING), ("IORING_OFF_SQES", (long)Interop.IORING_OFF_SQES),
            ("IO_URING_OP_SUPPORTED", Interop.IO_URING_OP_SUPPORTED), ("RWF_DSYNC", Interop.RWF_DSYNC), ("FALLOC_FL_KEEP_SIZE", Interop.FALLOC_FL_KEEP_SIZE),
            ("FALLOC_FL_PUNCH_HOLE", Interop.FALLOC_FL_PUNCH_HOLE), ("FALLOC_FL_ZERO_RANGE", Interop.FALLOC_FL_ZERO_RANGE),
            ("__NR_io_uring_setup", Interop.SYS_io_uring_setup), ("__NR_io_uring_enter", Interop.SYS_io_uring_enter), ("__NR_io_uring_register", Interop.SYS_io_uring_register),
        })
        {
            data.Add(name, value);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(ManagedLayout))]
    public void ManagedLayoutMatchesTheKernelHeader(string name, long managed)
    {
        var kernel = s_kernel.Value;
        Assert.True(kernel.ContainsKey(name), $"the C probe printed no value for {name}");
        Assert.Equal(kernel[name], managed);
    }

    private static Dictionary<string, long> ReadKernelLayout()
    {
        // Every entry of ManagedLayout is printed by a C program built against <linux/io_uring.h>.
        var names = ManagedLayout().Select(row => (string)row[0]).ToList();
        var lines = new List<string>
        {
            "#include <stdio.h>", "#include <stddef.h>", "#include <sys/uio.h>", "#include <sys/syscall.h>", "#include <linux/io_uring.h>",
            "#include <linux/fs.h>", "#include <linux/falloc.h>", "#include <linux/time_types.h>",
            "int main(void) {",
        };
        foreach (var name in names)
        {
            string expr;
            if (name.StartsWith("sizeof(", StringComparison.Ordinal))
            {
                string type = name[7..^1];
                expr = type is "iovec" or "io_uring_sqe" or "io_uring_cqe" or "io_uring_params" or "io_sqring_offsets" or "io_cqring_offsets" or "io_uring_probe" or "io_uring_probe_op" or "io_uring_getevents_arg" or "__kernel_timespec"
                    ? $"sizeof(struct {type})" : $"sizeof({type})";
            }
            else if (name.Contains('.'))
            {
                var parts = name.Split('.');
                expr = $"offsetof(struct {parts[0]}, {parts[1]})";
            }
            else
            {
                expr = name;
            }

            lines.Add($"  printf(\"%s %lld\\n\", \"{name}\", (long long)({expr}));");
        }

        lines.Add("  return 0;\n}");
        string dir = Directory.CreateTempSubdirectory("hci-layout").FullName;
        string source = Path.Combine(dir, "layout.c");
        string exe = Path.Combine(dir, "layout");
        File.WriteAllLines(source, lines);
        Run("cc", $"-o {exe} {source}");
        var output = Run(exe, string.Empty);
        Directory.Delete(dir, true);
        return output.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => l.Split(' '))
            .ToDictionary(p => p[0], p => long.Parse(p[1], System.Globalization.CultureInfo.InvariantCulture));
    }

    private static string Run(string file, string args)
    {
        var psi = new ProcessStartInfo(file, args) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {file}");
        string stdout = p.StandardOutput.ReadToEnd();
        string stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0)
        {
            throw new InvalidOperationException($"{file} {args} failed ({p.ExitCode}): {stderr}");
        }

        return stdout;
    }
}
