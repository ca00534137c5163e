namespace Hci.Transport.Virtio;

/// <summary>One region of a guest's memory as the front-end described it, and where it is mapped here.</summary>
/// <param name="GuestPhysicalAddress">Start in guest physical addresses (what descriptors carry).</param>
/// <param name="Size">Length in bytes.</param>
/// <param name="UserAddress">Start in the front-end's own virtual addresses (what vring addresses carry).</param>
/// <param name="HostAddress">Start of the mapping in this process.</param>
internal readonly record struct GuestMemoryRegion(ulong GuestPhysicalAddress, ulong Size, ulong UserAddress, nint HostAddress);
