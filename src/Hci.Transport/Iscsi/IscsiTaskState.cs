namespace Hci.Transport.Iscsi;

/// <summary>Where an <see cref="IscsiTask"/> stands.</summary>
internal enum IscsiTaskState
{
    /// <summary>In the pool.</summary>
    Idle,

    /// <summary>A write waiting for its Data-Out PDUs.</summary>
    AwaitingData,

    /// <summary>Running: in the device, or in <see cref="Scsi.ScsiDisk.ExecuteAsync"/>.</summary>
    Running,

    /// <summary>Answered: its Data-In may still reference its buffer until the output is sent.</summary>
    Sending,
}
