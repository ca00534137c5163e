using System.Runtime.InteropServices;

namespace Hci.Core.Blocks;

/// <summary>One scatter-gather element: native address and length, laid out as the kernel's struct iovec.</summary>
/// <param name="Address">Start of the buffer.</param>
/// <param name="Length">Bytes in the buffer.</param>
[StructLayout(LayoutKind.Sequential)]
public readonly record struct BlockSegment(nint Address, nint Length);
