namespace Hci.Core.Devices.Decorators;

/// <summary>What a <see cref="FaultRule"/> does to a matching request.</summary>
public enum FaultKind
{
    /// <summary>Fail the request with <see cref="FaultRule.Errno"/> without passing it to the device.</summary>
    Error = 0,

    /// <summary>A read returns the device's data up to the middle block of the request, and zeroes after it (a torn write read back).</summary>
    TornRead,

    /// <summary>A read returns data with one bit flipped in every logical block of the request that overlaps the rule's range.</summary>
    CorruptRead,
}
