namespace Hci.Core.Tests;

public enum DeviceKind
{
    IoUring,
    IoUringBuffered,
    File,
    Memory,
    Null,
    FaultPassThrough,
    DelayPassThrough,
}
