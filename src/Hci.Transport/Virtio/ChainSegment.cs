namespace Hci.Transport.Virtio;

/// <summary>One buffer of a descriptor chain, translated to a host pointer and checked against the memory table.</summary>
/// <param name="Address">Host pointer.</param>
/// <param name="Length">Bytes.</param>
/// <param name="DeviceWritable">True when the device writes it (the guest reads it back).</param>
internal readonly record struct ChainSegment(nint Address, uint Length, bool DeviceWritable);
