namespace Hci.Transport.Virtio;

/// <summary>
/// A guest's memory table: translates guest physical and front-end virtual addresses to pointers here, refusing
/// any range that is not wholly inside one region. Every address from the guest goes through it, so a hostile
/// guest can name no byte outside the memory it shared.
/// </summary>
internal sealed class GuestMemory
{
    /// <summary>The most regions a table may hold (QEMU sends at most 8 or 509 with the extension).</summary>
    public const int MaxRegions = 509;

    private readonly GuestMemoryRegion[] _regions;

    /// <summary>Checks and takes the regions.</summary>
    /// <param name="regions">The regions: each non-empty, none wrapping around the address space, none overlapping in guest physical addresses.</param>
    /// <exception cref="ArgumentException">The table is malformed; the message says how.</exception>
    public GuestMemory(IEnumerable<GuestMemoryRegion> regions)
    {
        ArgumentNullException.ThrowIfNull(regions);
        _regions = regions.OrderBy(r => r.GuestPhysicalAddress).ToArray();
        if (_regions.Length > MaxRegions)
        {
            throw new ArgumentException($"A memory table holds at most {MaxRegions} regions (got {_regions.Length}).", nameof(regions));
        }

        for (int i = 0; i < _regions.Length; i++)
        {
            var r = _regions[i];
            if (r.Size == 0 || r.GuestPhysicalAddress + r.Size < r.GuestPhysicalAddress || r.UserAddress + r.Size < r.UserAddress || r.HostAddress == 0)
            {
                throw new ArgumentException($"Memory region {i} is empty, unmapped or wraps around the address space.", nameof(regions));
            }

            if (i > 0 && _regions[i - 1].GuestPhysicalAddress + _regions[i - 1].Size > r.GuestPhysicalAddress)
            {
                throw new ArgumentException($"Memory regions overlap at guest address 0x{r.GuestPhysicalAddress:x}.", nameof(regions));
            }
        }
    }

    /// <summary>The regions, by guest physical address.</summary>
    public ReadOnlySpan<GuestMemoryRegion> Regions => _regions;

    /// <summary>Translates a guest physical range.</summary>
    /// <param name="guestAddress">Start of the range.</param>
    /// <param name="length">Its length; 0 is refused.</param>
    /// <param name="pointer">The host pointer to its first byte.</param>
    /// <returns>False when the range is empty, wraps, or is not wholly inside one region.</returns>
    public bool TryTranslate(ulong guestAddress, ulong length, out nint pointer) => Translate(guestAddress, length, user: false, out pointer);

    /// <summary>Translates a range given in the front-end's virtual addresses (vring addresses are).</summary>
    /// <param name="userAddress">Start of the range.</param>
    /// <param name="length">Its length; 0 is refused.</param>
    /// <param name="pointer">The host pointer to its first byte.</param>
    /// <returns>False when the range is not wholly inside one region.</returns>
    public bool TryTranslateUser(ulong userAddress, ulong length, out nint pointer) => Translate(userAddress, length, user: true, out pointer);

    private bool Translate(ulong address, ulong length, bool user, out nint pointer)
    {
        foreach (ref readonly var r in _regions.AsSpan())
        {
            ulong start = user ? r.UserAddress : r.GuestPhysicalAddress;
            if (address >= start && address - start < r.Size)
            {
                ulong offset = address - start;
                if (length == 0 || length > r.Size - offset)
                {
                    break;
                }

                pointer = r.HostAddress + (nint)offset;
                return true;
            }
        }

        pointer = 0;
        return false;
    }
}
