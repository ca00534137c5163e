namespace Hci.Transport.Iscsi;

/// <summary>Where a request's CmdSN falls in the command window.</summary>
internal enum CmdSnOrder
{
    /// <summary>The next expected: it runs now.</summary>
    Next,

    /// <summary>Inside the window past a gap: it waits for the gap to fill.</summary>
    Ahead,

    /// <summary>Below ExpCmdSN (a resend of one already run) or past MaxCmdSN: silently ignored.</summary>
    Outside,
}

/// <summary>
/// The session's command window (RFC 7143, 3.2.2.1): ExpCmdSN, MaxCmdSN, and the serial-number arithmetic that
/// places a CmdSN in it. Non-immediate requests run in CmdSN order.
/// </summary>
/// <param name="size">Commands the window holds (MaxCmdSN = ExpCmdSN + size - 1).</param>
internal sealed class IscsiCommandWindow(int size)
{
    /// <summary>The next CmdSN expected.</summary>
    public uint ExpCmdSn { get; set; }

    /// <summary>The last CmdSN accepted now.</summary>
    public uint MaxCmdSn => ExpCmdSn + (uint)size - 1;

    /// <summary>Places <paramref name="cmdSn"/> in the window (serial arithmetic, RFC 1982).</summary>
    /// <param name="cmdSn">The request's CmdSN.</param>
    /// <returns>Where it falls.</returns>
    public CmdSnOrder Order(uint cmdSn)
    {
        if ((int)(cmdSn - ExpCmdSn) < 0 || (int)(cmdSn - MaxCmdSn) > 0)
        {
            return CmdSnOrder.Outside;
        }

        return cmdSn == ExpCmdSn ? CmdSnOrder.Next : CmdSnOrder.Ahead;
    }

    /// <summary>
    /// Accepts a request: an immediate one always (it does not advance the window); one at ExpCmdSN advances it;
    /// one inside the window is accepted without advancing; one outside is refused.
    /// </summary>
    /// <param name="cmdSn">The request's CmdSN.</param>
    /// <param name="immediate">Its I bit.</param>
    /// <returns>False when it is to be ignored.</returns>
    public bool Accept(uint cmdSn, bool immediate)
    {
        if (immediate)
        {
            return true;
        }

        var order = Order(cmdSn);
        if (order == CmdSnOrder.Next)
        {
            ExpCmdSn++;
        }

        return order != CmdSnOrder.Outside;
    }
}
