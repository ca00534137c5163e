using Hci.Transport.Scsi;

namespace Hci.Transport.Iscsi;

/// <summary>
/// Task management (SPDK's <c>iscsi_pdu_hdr_op_task</c>): ABORT TASK, ABORT and CLEAR TASK SET, LOGICAL UNIT
/// RESET and TARGET WARM RESET. A function that aborts running tasks is answered once they have finished, so
/// that no data of an aborted command reaches the device after the initiator has been told it is gone.
/// </summary>
internal sealed partial class IscsiConnection
{
    private void TaskManagement(Span<byte> bhs)
    {
        AcceptCmdSn(bhs);
        var h = new TaskManagementRequestPdu(bhs);
        int lun = ScsiLunMap.Decode(h.Lun);
        var wait = new IscsiTaskManagementWait(h.InitiatorTaskTag);
        switch (h.Function)
        {
            case IscsiTaskManagementFunction.AbortTask: // done once the task is; "does not exist" when it has been answered already
                if (_tasks.TryGetValue(h.ReferencedTaskTag, out var task))
                {
                    Abort(task, wait);
                }
                else
                {
                    wait.Response = IscsiTaskManagementResponse.TaskDoesNotExist;
                }

                break;
            case IscsiTaskManagementFunction.AbortTaskSet or IscsiTaskManagementFunction.ClearTaskSet: // this session's tasks on that LUN
                AbortAll(wait, lun);
                break;
            case IscsiTaskManagementFunction.ClearAca: // no ACA is ever established (NACA is refused)
                break;
            case IscsiTaskManagementFunction.LogicalUnitReset:
                if (lun < 0 || !_paths.TryGetValue(lun, out var path))
                {
                    wait.Response = IscsiTaskManagementResponse.LunDoesNotExist;
                    break;
                }

                AbortAll(wait, lun);
                path.Disk.Reset();
                break;
            case IscsiTaskManagementFunction.TargetWarmReset:
                AbortAll(wait, -1);
                foreach (var p in _paths.Values)
                {
                    p.Disk.Reset();
                }

                break;
            case IscsiTaskManagementFunction.TargetColdReset or IscsiTaskManagementFunction.TaskReassign: // not at ErrorRecoveryLevel 0
                wait.Response = IscsiTaskManagementResponse.NotSupported;
                break;
            default:
                wait.Response = IscsiTaskManagementResponse.Rejected;
                break;
        }

        if (wait.Pending == 0)
        {
            QueueTaskManagementResponse(wait.Itt, wait.Response);
        }
    }

    private void AbortAll(IscsiTaskManagementWait wait, int lun)
    {
        IscsiTask[] affected = [.. _tasks.Values.Where(s => lun < 0 || s.Lun == lun)];
        foreach (var s in affected)
        {
            Abort(s, wait);
        }
    }

    private void Abort(IscsiTask s, IscsiTaskManagementWait wait)
    {
        _tasks.Remove(s.Itt);
        if (s.State == IscsiTaskState.AwaitingData)
        {
            _pool.Return(s); // no I/O started: it simply ends
            return;
        }

        // Running: its answer is dropped, and the function answered once it has finished.
        s.Abort = wait;
        wait.Pending++;
    }

    private void QueueTaskManagementResponse(uint itt, IscsiTaskManagementResponse response)
    {
        Span<byte> reply = stackalloc byte[IscsiHeader.Length];
        var r = TaskManagementResponsePdu.Create(reply);
        r.InitiatorTaskTag = itt;
        r.Response = response;
        Stamp(reply);
        unsafe
        {
            QueuePdu(reply, null, 0, copy: true);
        }
    }
}
