namespace Hci.Transport.Virtio;

/// <summary>virtio-blk constants (virtio 1.x, 5.2).</summary>
internal static class VirtioBlk
{
    /// <summary>Read.</summary>
    public const uint TypeIn = 0;

    /// <summary>Write.</summary>
    public const uint TypeOut = 1;

    /// <summary>Flush.</summary>
    public const uint TypeFlush = 4;

    /// <summary>Device id (20 bytes).</summary>
    public const uint TypeGetId = 8;

    /// <summary>Discard.</summary>
    public const uint TypeDiscard = 11;

    /// <summary>Write zeroes.</summary>
    public const uint TypeWriteZeroes = 13;

    /// <summary>Success.</summary>
    public const byte StatusOk = 0;

    /// <summary>I/O error.</summary>
    public const byte StatusIoErr = 1;

    /// <summary>Unsupported request.</summary>
    public const byte StatusUnsupported = 2;

    /// <summary>Bytes of the request header (type, reserved, sector).</summary>
    public const int HeaderSize = 16;

    /// <summary>Bytes of one discard / write-zeroes range (sector, num_sectors, flags).</summary>
    public const int RangeSize = 16;

    /// <summary>Sector size of the protocol: offsets are in 512-byte units whatever the block size.</summary>
    public const int SectorSize = 512;

    /// <summary>Length of the GET_ID answer.</summary>
    public const int IdLength = 20;
}
