using Hci.Transport.Iscsi;

namespace Hci.Transport.Tests;

/// <summary>The command window orders CmdSNs with serial arithmetic (RFC 1982), across the 32-bit wrap too.</summary>
public sealed class IscsiCommandWindowTests
{
    [Theory]
    [InlineData(10u)]
    [InlineData(0xFFFFFFFEu)] // the window straddles the wrap
    public void NextAheadAndOutsideAreToldApartAroundTheWindow(uint start)
    {
        var window = new IscsiCommandWindow(4) { ExpCmdSn = start };
        Assert.Equal(start + 3, window.MaxCmdSn);
        Assert.Equal(CmdSnOrder.Next, window.Order(start));
        Assert.Equal(CmdSnOrder.Ahead, window.Order(start + 3));
        Assert.Equal(CmdSnOrder.Outside, window.Order(start + 4));
        Assert.Equal(CmdSnOrder.Outside, window.Order(start - 1));
    }

    [Fact]
    public void OnlyTheExpectedCmdSnAdvancesTheWindowAndImmediateRequestsNever()
    {
        var window = new IscsiCommandWindow(8) { ExpCmdSn = 5 };
        Assert.True(window.Accept(5, immediate: false));
        Assert.Equal(6u, window.ExpCmdSn);
        Assert.True(window.Accept(6, immediate: true));
        Assert.Equal(6u, window.ExpCmdSn);
        Assert.True(window.Accept(8, immediate: false)); // inside, past a gap: accepted, the window stays
        Assert.Equal(6u, window.ExpCmdSn);
        Assert.False(window.Accept(4, immediate: false)); // a resend of one already run
        Assert.False(window.Accept(100, immediate: false));
    }
}
