namespace Hci.Core.Blocks;

/// <summary>Modifiers of a <see cref="BlockRequest"/>.</summary>
[Flags]
public enum BlockRequestFlags : byte
{
    /// <summary>No modifier.</summary>
    None = 0,

    /// <summary>Force unit access: the write completes only once it is durable (RWF_DSYNC, SCSI FUA).</summary>
    ForceUnitAccess = 1,
}
