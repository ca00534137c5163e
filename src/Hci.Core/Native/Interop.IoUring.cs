using System.Runtime.InteropServices;

namespace Hci.Core.Native;

/// <summary>io_uring constants from the kernel's UAPI header (linux/io_uring.h); a test checks them against it.</summary>
internal static partial class Interop
{
    internal const int SYS_io_uring_setup = 425;
    internal const int SYS_io_uring_enter = 426;
    internal const int SYS_io_uring_register = 427;

    internal const byte IORING_OP_NOP = 0;
    internal const byte IORING_OP_READV = 1;
    internal const byte IORING_OP_WRITEV = 2;
    internal const byte IORING_OP_FSYNC = 3;
    internal const byte IORING_OP_READ_FIXED = 4;
    internal const byte IORING_OP_WRITE_FIXED = 5;
    internal const byte IORING_OP_POLL_ADD = 6;
    internal const byte IORING_OP_FALLOCATE = 17;
    internal const byte IORING_OP_READ = 22;
    internal const byte IORING_OP_WRITE = 23;

    internal const byte IOSQE_FIXED_FILE = 1 << 0;

    internal const uint IORING_SETUP_CQSIZE = 1U << 3;
    internal const uint IORING_SETUP_CLAMP = 1U << 4;
    internal const uint IORING_SETUP_R_DISABLED = 1U << 6;
    internal const uint IORING_SETUP_SUBMIT_ALL = 1U << 7;
    internal const uint IORING_SETUP_COOP_TASKRUN = 1U << 8;
    internal const uint IORING_SETUP_SINGLE_ISSUER = 1U << 12;
    internal const uint IORING_SETUP_DEFER_TASKRUN = 1U << 13;

    internal const uint IORING_FSYNC_DATASYNC = 1U << 0;

    internal const uint IORING_ENTER_GETEVENTS = 1U << 0;
    internal const uint IORING_ENTER_EXT_ARG = 1U << 3;

    internal const uint IORING_FEAT_SINGLE_MMAP = 1U << 0;
    internal const uint IORING_FEAT_NODROP = 1U << 1;
    internal const uint IORING_FEAT_SUBMIT_STABLE = 1U << 2;
    internal const uint IORING_FEAT_EXT_ARG = 1U << 8;

    internal const uint IORING_REGISTER_BUFFERS = 0;
    internal const uint IORING_UNREGISTER_BUFFERS = 1;
    internal const uint IORING_REGISTER_FILES = 2;
    internal const uint IORING_UNREGISTER_FILES = 3;
    internal const uint IORING_REGISTER_PROBE = 8;
    internal const uint IORING_REGISTER_ENABLE_RINGS = 12;

    internal const ulong IORING_OFF_SQ_RING = 0UL;
    internal const ulong IORING_OFF_CQ_RING = 0x8000000UL;
    internal const ulong IORING_OFF_SQES = 0x10000000UL;

    internal const ushort IO_URING_OP_SUPPORTED = 1;

    internal const int RWF_DSYNC = 0x00000002;

    internal const int FALLOC_FL_KEEP_SIZE = 0x01;
    internal const int FALLOC_FL_PUNCH_HOLE = 0x02;
    internal const int FALLOC_FL_ZERO_RANGE = 0x10;

    internal const short POLLIN = 0x0001;

    /// <summary>The argument of io_uring_enter with IORING_ENTER_EXT_ARG.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct io_uring_getevents_arg
    {
        public ulong sigmask;
        public uint sigmask_sz;
        public uint pad;
        public ulong ts;
    }

    /// <summary>struct __kernel_timespec.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct kernel_timespec
    {
        public long tv_sec;
        public long tv_nsec;
    }
}
