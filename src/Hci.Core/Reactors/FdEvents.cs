namespace Hci.Core.Reactors;

/// <summary>Readiness of a watched descriptor (the epoll event bits).</summary>
[Flags]
public enum FdEvents : uint
{
    /// <summary>None.</summary>
    None = 0,

    /// <summary>Data to read (EPOLLIN).</summary>
    Readable = 0x001,

    /// <summary>Room to write (EPOLLOUT).</summary>
    Writable = 0x004,

    /// <summary>An error is pending (EPOLLERR, always reported).</summary>
    Error = 0x008,

    /// <summary>Hung up (EPOLLHUP, always reported).</summary>
    HangUp = 0x010,

    /// <summary>The peer closed its writing side (EPOLLRDHUP).</summary>
    ReadHangUp = 0x2000,
}
