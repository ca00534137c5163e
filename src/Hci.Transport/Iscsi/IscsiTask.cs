using Hci.Core.Buffers;
using Hci.Core.Reactors;
using Hci.Transport.Scsi;

namespace Hci.Transport.Iscsi;

/// <summary>
/// One iSCSI command's state, reused from command to command (SPDK's <c>spdk_iscsi_task</c>): the SCSI task, the
/// block request its fast path submits and its data buffer (both from <see cref="IoSlot"/>), and the progress of its
/// Data-Out and R2T sequence. Taken from and given back to the connection's <see cref="IoSlotPool{TSlot}"/>.
/// </summary>
internal sealed class IscsiTask : IoSlot, IReactorMessage
{
    /// <summary>The SCSI command as the unit sees it.</summary>
    public ScsiTask Task { get; } = new();

    /// <summary>The command's LUN field as it came, echoed in its R2Ts and Data-In.</summary>
    public ulong LunField { get; set; }

    /// <summary>The LUN's unit and queue; null for a LUN that does not exist.</summary>
    public IscsiLunPath? Path { get; set; }

    /// <summary>The decoded LUN (-1 when not decodable).</summary>
    public int Lun { get; set; }

    /// <summary>The Initiator Task Tag.</summary>
    public uint Itt { get; set; }

    /// <summary>Where the task stands.</summary>
    public IscsiTaskState State { get; set; }

    /// <summary>Write data received so far (bytes from the start of the buffer).</summary>
    public int Received { get; set; }

    /// <summary>Where unsolicited data ends (immediate data and the first burst).</summary>
    public int UnsolicitedEnd { get; set; }

    /// <summary>Where the data asked for by the last R2T ends.</summary>
    public int NextR2TEnd { get; set; }

    /// <summary>The next R2TSN.</summary>
    public int R2TSn { get; set; }

    /// <summary>The DataSN the next Data-Out must carry.</summary>
    public uint NextDataSn { get; set; }

    /// <summary>A Data-Out came out of order: the command fails once its data is in.</summary>
    public bool SequenceError { get; set; }

    /// <summary>The task management function that aborted this task while it ran, if any.</summary>
    public IscsiTaskManagementWait? Abort { get; set; }

    /// <summary>The connection the task belongs to, to find it again from a completion.</summary>
    public object? Owner { get; set; }

    /// <summary>A command that ran off the reactor is posted back as the task itself (no allocation): it completes there.</summary>
    public void Run() => ((IscsiConnection)Owner!).RunPosted(this);

    /// <summary>Back in the pool: forgets the command's LUN, its SCSI data buffer and any abort that waited on it.</summary>
    protected override void Reset()
    {
        State = IscsiTaskState.Idle;
        Path = null;
        Task.Buffer = null;
        Abort = null;
    }
}
